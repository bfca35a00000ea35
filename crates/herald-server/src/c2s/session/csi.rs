//! XEP-0352 client state indication in the session task: `<inactive/>` lets the CSI buffer
//! (herald-session) hold what can wait, `<active/>` flushes it in order. What may be held and
//! whether a held stanza may push are herald-push's rules (`classify`, `delivery`).

use super::*;

impl Session {
    /// `<active/>` or `<inactive/>`.
    pub(super) async fn on_csi(&mut self, el: &Element) -> Result<Flow, StreamError> {
        match el.name() {
            "inactive" => {
                self.csi.set_inactive();
                Ok(Flow::Continue)
            }
            "active" => {
                let held = self.csi.set_active();
                Ok(self.emit_all(held, None).await)
            }
            _ => Err(unsupported(el)),
        }
    }
}
