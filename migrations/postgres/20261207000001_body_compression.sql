-- Bodies and callers' own bytes over 2 kB (attachments, mostly) are compressed with lz4 instead of
-- PostgreSQL's default pglz: pglz compressed a 10 MB attachment at about a tenth of the speed of writing
-- it, and was most of the database's work per accepted byte. lz4 compresses base64 and text as well
-- for this purpose at several times the speed. Only the catalog changes: rows already written keep
-- their compression until they are rewritten. A server built without lz4 (or older than 14) keeps pglz.
DO $$
BEGIN
    IF current_setting('server_version_num')::integer >= 140000 THEN
        BEGIN
            EXECUTE 'ALTER TABLE messages ALTER COLUMN body SET COMPRESSION lz4,
                                          ALTER COLUMN raw SET COMPRESSION lz4';
        EXCEPTION WHEN feature_not_supported THEN
            RAISE NOTICE 'lz4 is not available on this server: message bodies stay compressed with pglz';
        END;
    END IF;
END
$$;
