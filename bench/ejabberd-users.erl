%% Bench accounts for ejabberd, evaluated by file:script/1 inside a first, short ejabberd run
%% (bench/lib.sh ejabberd_start) before the measured one starts on the same mnesia spool.
%% Users {BENCH_PREFIX}{0..BENCH_USERS-1}@localhost, all with BENCH_PASSWORD, stored as SCRAM-SHA-1
%% (auth_password_format: scram) with one salt for all, like `herald-bench prosody-users` and
%% `herald user add-bulk`: the bench client then derives the salted password once, and the
%% server does no PBKDF2 at login either way.
%%
%% The records are those ejabberd_auth_mnesia:try_register/3 writes (#passwd{us = {User, Host},
%% password = #scram{}}), but written in bulk: one try_register per user is one transaction on
%% the disc_only (dets) passwd table, ~11 ms each here (30 s for 3,000 users), and even one
%% transaction for all took 13 s. So the table is switched to disc_copies, written in one
%% transaction, and switched back to disc_only_copies (ejabberd's own choice for it): about 1 s
%% for 3,000 users. The register_user hook is not run; none of the configured modules needs it
%% for new accounts, and reg_users_counter (a ram table) is recounted when the measured run
%% starts.
Prefix = list_to_binary(os:getenv("BENCH_PREFIX")),
Count = list_to_integer(os:getenv("BENCH_USERS")),
Password = list_to_binary(os:getenv("BENCH_PASSWORD")),
Host = <<"localhost">>,
Iter = 4096,
Salt = crypto:strong_rand_bytes(16),
Salted = scram:salted_password(sha, Password, Salt, Iter),
%% #scram{storedkey, serverkey, salt, hash, iterationcount} from p1_xmpp's scram.hrl
Scram = {scram, base64:encode(scram:stored_key(sha, scram:client_key(sha, Salted))),
         base64:encode(scram:server_key(sha, Salted)), base64:encode(Salt), sha, Iter},
Write = fun() ->
    lists:foreach(fun(N) ->
        User = jid:nodeprep(<<Prefix/binary, (integer_to_binary(N))/binary>>),
        ok = mnesia:write({passwd, {User, Host}, Scram})
    end, lists:seq(0, Count - 1))
end,
{atomic, ok} = mnesia:change_table_copy_type(passwd, node(), disc_copies),
{atomic, ok} = mnesia:transaction(Write),
{atomic, ok} = mnesia:change_table_copy_type(passwd, node(), disc_only_copies),
disc_only_copies = mnesia:table_info(passwd, storage_type),
Count = length(ejabberd_auth:get_users(Host)).
