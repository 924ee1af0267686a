-- Bodies and callers' own bytes over 2 kB (attachments, mostly) are compressed with lz4 instead of
-- PostgreSQL's default pglz: pglz compressed a 10 MB attachment at about a tenth of the speed of writing
-- it, and was most of the database's work per accepted byte. lz4 compresses base64 and text as well
-- for this purpose at several times the speed. Only the catalog changes: rows already written keep
-- their compression until they are rewritten. A server built without lz4 (or older than 14) keeps pglz,
-- and so does one where `messages` stays locked by other sessions for 5 s (the change needs a brief
-- exclusive lock; it is then left for an operator to run when the table is quiet).
DO $$
DECLARE
    waited text := current_setting('lock_timeout');
BEGIN
    IF current_setting('server_version_num')::integer >= 140000 THEN
        PERFORM set_config('lock_timeout', '5s', true);
        BEGIN
            EXECUTE 'ALTER TABLE messages ALTER COLUMN body SET COMPRESSION lz4,
                                          ALTER COLUMN raw SET COMPRESSION lz4';
        EXCEPTION
            WHEN feature_not_supported THEN
                RAISE NOTICE 'lz4 is not available on this server: message bodies stay compressed with pglz';
            WHEN lock_not_available THEN
                RAISE WARNING 'messages stayed locked for 5 s: message bodies stay compressed with pglz; '
                    'run "ALTER TABLE messages ALTER COLUMN body SET COMPRESSION lz4, ALTER COLUMN raw '
                    'SET COMPRESSION lz4" when the table is quiet';
        END;
        PERFORM set_config('lock_timeout', waited, true);
    END IF;
END
$$;
