//! XEP-0363 on the HTTP side: the PUT that fills a slot, the GET/HEAD that serves the file,
//! CORS for web clients, and the expiry of old files. The slot itself is handed out over
//! XMPP (`crate::features::upload`); its terms and signature are `herald_xep::upload`'s.
//!
//! A PUT is streamed to `upload/tmp/ID` and renamed to `upload/files/ID` only once every
//! announced byte arrived and the store recorded it (quota included); whatever fails or is
//! abandoned on the way (client gone, slow sender, wrong size, quota) leaves nothing: the
//! temporary file is removed when the request ends, and `tmp/` is emptied at start. Only
//! the id (32 hex digits) ever names a file on disk.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_store::{roles, StoreError, Upload};
use herald_xep::upload::{self as xep, SlotTerms};
use http_body_util::BodyExt;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::Shared;

/// Adds the CORS headers web clients need (any origin may PUT to a slot it holds or GET a
/// file: the URLs are the secrets, not the origin).
fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, PUT, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Range"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, ETag"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

fn status(s: StatusCode, why: &'static str) -> Response {
    cors((s, why).into_response())
}

/// `OPTIONS`: the CORS preflight.
pub async fn preflight() -> Response {
    cors(StatusCode::NO_CONTENT.into_response())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Removes a temporary file when dropped unless kept: an abandoned request (the client
/// went away and hyper dropped the handler) leaves nothing either.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Holds one owner's running-upload slot and the slot id's lock until the PUT ends.
struct Running {
    shared: Arc<Shared>,
    owner: String,
    id: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let h = &self.shared.http;
        let mut u = h.uploading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = u.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                u.remove(&self.owner);
            }
        }
        drop(u);
        h.in_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// `PUT /upload/ID/NAME?size&type&owner&expires&sig`: fills a slot.
pub async fn put(
    State(shared): State<Arc<Shared>>,
    Path((id, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = put_inner(&shared, id, name, q, headers, body).await;
    let counter = if r.status() == StatusCode::CREATED {
        &shared.http.stats.uploads
    } else {
        &shared.http.stats.uploads_failed
    };
    counter.fetch_add(1, Ordering::Relaxed);
    r
}

async fn put_inner(
    shared: &Arc<Shared>,
    id: String,
    name: String,
    q: HashMap<String, String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !xep::valid_id(&id) || !xep::valid_filename(&name) {
        return status(StatusCode::NOT_FOUND, "no such slot\n");
    }
    let field = |k: &str| q.get(k).map(String::as_str);
    let num = |k: &str| field(k).and_then(|v| v.parse::<u64>().ok());
    let (Some(size), Some(ctype), Some(owner), Some(expires), Some(sig)) = (
        num("size"),
        field("type"),
        field("owner"),
        num("expires"),
        field("sig"),
    ) else {
        return status(StatusCode::FORBIDDEN, "not a signed upload URL\n");
    };
    let terms = SlotTerms {
        id,
        filename: name,
        size,
        content_type: ctype.to_string(),
        owner: owner.to_string(),
        expires,
    };
    if !terms.verify(&shared.http.upload_secret, sig) {
        return status(StatusCode::FORBIDDEN, "bad signature\n");
    }
    if unix_now() > terms.expires {
        return status(StatusCode::FORBIDDEN, "upload slot expired\n");
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        None => return status(StatusCode::LENGTH_REQUIRED, "Content-Length required\n"),
        Some(n) if n != terms.size => {
            return status(
                StatusCode::BAD_REQUEST,
                "Content-Length differs from the slot's size\n",
            )
        }
        Some(_) => {}
    }
    // XEP-0363 §5: the Content-Type must be the slot's (parameters aside); none at all is
    // taken as the slot's.
    if let Some(t) = headers.get(header::CONTENT_TYPE) {
        let t = t.to_str().ok().and_then(xep::normalize_content_type);
        if t.as_deref() != Some(terms.content_type.as_str()) {
            return status(
                StatusCode::BAD_REQUEST,
                "Content-Type differs from the slot's\n",
            );
        }
    }
    let running = {
        let h = &shared.http;
        let mut ids = h.in_progress.lock().unwrap_or_else(|e| e.into_inner());
        if ids.contains(&terms.id) {
            return status(StatusCode::CONFLICT, "this slot is being uploaded\n");
        }
        let mut u = h.uploading.lock().unwrap_or_else(|e| e.into_inner());
        let n = u.entry(terms.owner.clone()).or_insert(0);
        if *n >= shared.cfg.upload.max_concurrent_per_user {
            return status(
                StatusCode::TOO_MANY_REQUESTS,
                "too many uploads at once for this account\n",
            );
        }
        *n += 1;
        ids.insert(terms.id.clone());
        Running {
            shared: shared.clone(),
            owner: terms.owner.clone(),
            id: terms.id.clone(),
        }
    };
    let final_path = shared.http.upload_dir.join("files").join(&terms.id);
    let id = terms.id.clone();
    match shared.db(move |s: &roles::Uploads| s.upload_get(&id)).await {
        Ok(None) if !final_path.exists() => {}
        Ok(_) => return status(StatusCode::CONFLICT, "this slot is already used\n"),
        Err(e) => {
            tracing::error!(error = %e, "upload lookup failed");
            return status(StatusCode::INTERNAL_SERVER_ERROR, "store error\n");
        }
    }
    let quota = shared.cfg.upload.quota_per_user.0;
    let owner = terms.owner.clone();
    match shared
        .db(move |s: &roles::Uploads| s.upload_usage(&owner))
        .await
    {
        Ok(used) if used.saturating_add(terms.size) > quota => {
            return status(StatusCode::PAYLOAD_TOO_LARGE, "upload quota exceeded\n")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "upload usage lookup failed");
            return status(StatusCode::INTERNAL_SERVER_ERROR, "store error\n");
        }
    }
    let mut tmp = TempFile {
        path: shared.http.upload_dir.join("tmp").join(&terms.id),
        keep: false,
    };
    if let Err(r) = receive(shared, &tmp.path, terms.size, body).await {
        return r;
    }
    if let Err(e) = tokio::fs::rename(&tmp.path, &final_path).await {
        tracing::error!(error = %e, "upload rename failed");
        return status(StatusCode::INTERNAL_SERVER_ERROR, "cannot store the file\n");
    }
    // From here the file is in place: removed again unless the store records it.
    tmp.path = final_path;
    let row = Upload {
        id: terms.id.clone(),
        owner: terms.owner.clone(),
        filename: terms.filename.clone(),
        size: terms.size,
        content_type: terms.content_type.clone(),
        created_at: i64::try_from(unix_now()).unwrap_or(i64::MAX),
    };
    match shared
        .db(move |s: &roles::Uploads| s.upload_add(&row, quota))
        .await
    {
        Ok(()) => {
            tmp.keep = true;
            drop(running);
            shared
                .http
                .stats
                .upload_bytes
                .fetch_add(terms.size, Ordering::Relaxed);
            tracing::info!(owner = %terms.owner, id = %terms.id, size = terms.size, "file uploaded");
            status(StatusCode::CREATED, "")
        }
        Err(StoreError::QuotaExceeded) => {
            status(StatusCode::PAYLOAD_TOO_LARGE, "upload quota exceeded\n")
        }
        Err(StoreError::AlreadyExists) => {
            // Never the file of another row: its id is locked while this PUT runs, and a
            // completed one was refused above. Keep what is there.
            tmp.keep = true;
            status(StatusCode::CONFLICT, "this slot is already used\n")
        }
        Err(e) => {
            tracing::error!(error = %e, "recording an upload failed");
            status(StatusCode::INTERNAL_SERVER_ERROR, "store error\n")
        }
    }
}

/// Streams the body into `path` (created new), exactly `size` bytes, each read within
/// `request_timeout`.
async fn receive(
    shared: &Shared,
    path: &std::path::Path,
    size: u64,
    mut body: Body,
) -> Result<(), Response> {
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, path = %path.display(), "cannot create upload file");
            status(StatusCode::INTERNAL_SERVER_ERROR, "cannot store the file\n")
        })?;
    let timeout = shared.cfg.http.request_timeout.0;
    let mut got: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(status(StatusCode::REQUEST_TIMEOUT, "upload too slow\n")),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(status(StatusCode::BAD_REQUEST, "upload cut short\n")),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        got = got.saturating_add(data.len() as u64);
        if got > size {
            return Err(status(
                StatusCode::BAD_REQUEST,
                "more bytes than announced\n",
            ));
        }
        if let Err(e) = f.write_all(&data).await {
            tracing::error!(error = %e, "writing an upload failed");
            return Err(status(
                StatusCode::INSUFFICIENT_STORAGE,
                "cannot store the file\n",
            ));
        }
    }
    if got != size {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "fewer bytes than announced\n",
        ));
    }
    f.sync_all().await.map_err(|e| {
        tracing::error!(error = %e, "syncing an upload failed");
        status(StatusCode::INSUFFICIENT_STORAGE, "cannot store the file\n")
    })?;
    Ok(())
}

/// `GET` (and `HEAD`) `/upload/ID/NAME`: the file, with ranges and caching headers.
pub async fn get(
    State(shared): State<Arc<Shared>>,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !xep::valid_id(&id) {
        return status(StatusCode::NOT_FOUND, "not found\n");
    }
    // One row found by its primary key.
    let row = match shared.db_read(|s: &roles::Uploads| s.upload_get(&id)) {
        Ok(Some(u)) if u.filename == name => u,
        Ok(_) => return status(StatusCode::NOT_FOUND, "not found\n"),
        Err(e) => {
            tracing::error!(error = %e, "upload lookup failed");
            return status(StatusCode::INTERNAL_SERVER_ERROR, "store error\n");
        }
    };
    let etag = format!("\"{}\"", row.id);
    let mut r = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        );
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if not_modified {
        return cors(
            r.status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .unwrap_or_default(),
        );
    }
    let mut f =
        match tokio::fs::File::open(shared.http.upload_dir.join("files").join(&row.id)).await {
            Ok(f) => f,
            Err(_) => return status(StatusCode::NOT_FOUND, "not found\n"),
        };
    let len = row.size;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (start, end) = match xep::range(range, len) {
        xep::Range::Full => {
            r = r.status(StatusCode::OK);
            (0, len.saturating_sub(1))
        }
        xep::Range::Part { start, end } => {
            r = r
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
            (start, end)
        }
        xep::Range::Unsatisfiable => {
            return cors(
                r.status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                    .body(Body::empty())
                    .unwrap_or_default(),
            )
        }
    };
    if start > 0 && f.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n");
    }
    let n = if len == 0 { 0 } else { end - start + 1 };
    let disposition = format!(
        "{}; filename*=UTF-8''{}",
        xep::disposition(&row.content_type),
        xep::percent_encode(&row.filename)
    );
    shared.http.stats.downloads.fetch_add(1, Ordering::Relaxed);
    use tokio::io::AsyncReadExt;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(f.take(n)));
    cors(
        r.header(header::CONTENT_TYPE, &row.content_type)
            .header(header::CONTENT_LENGTH, n)
            .header(header::CONTENT_DISPOSITION, disposition)
            .body(body)
            .unwrap_or_default(),
    )
}

/// Deletes uploads completed more than `expire_after` before `now` (Unix seconds), file
/// first, then the row, in batches; returns how many went. `herald upload purge` runs it
/// too (`upload_dir` is `data_dir/upload`).
pub fn purge(
    store: &roles::Uploads,
    upload_dir: &std::path::Path,
    expire_after: std::time::Duration,
    now: u64,
) -> Result<u64, StoreError> {
    let cutoff = i64::try_from(now.saturating_sub(expire_after.as_secs())).unwrap_or(0);
    let mut n = 0;
    loop {
        let batch = store.uploads_older_than(cutoff, 500)?;
        if batch.is_empty() {
            return Ok(n);
        }
        for u in batch {
            if !xep::valid_id(&u.id) {
                // Never from a path the store could not have been given by us.
                store.upload_remove(&u.id)?;
                continue;
            }
            match std::fs::remove_file(upload_dir.join("files").join(&u.id)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Io(e)),
            }
            store.upload_remove(&u.id)?;
            n += 1;
        }
    }
}

/// The periodic expiry: every `expire_after / 100` (between a minute and an hour).
pub async fn expire(shared: Arc<Shared>) {
    let every = (shared.cfg.upload.expire_after.0 / 100).clamp(
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(3600),
    );
    loop {
        let dir = shared.http.upload_dir.clone();
        let after = shared.cfg.upload.expire_after.0;
        match shared
            .db(move |s: &roles::Uploads| purge(s, &dir, after, unix_now()))
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                shared
                    .http
                    .stats
                    .uploads_expired
                    .fetch_add(n, Ordering::Relaxed);
                tracing::info!(files = n, "expired uploads deleted");
            }
            Err(e) => tracing::error!(error = %e, "upload expiry failed"),
        }
        tokio::time::sleep(every).await;
    }
}
