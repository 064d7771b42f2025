-- A second file, applied after the first.

CREATE FUNCTION fx_total() RETURNS bigint LANGUAGE plpgsql STABLE AS $body$
DECLARE
    total bigint;
BEGIN
    SELECT coalesce(sum(amount), 0) INTO total FROM fx_entries;
    RETURN total;
END;
$body$;

INSERT INTO fx_entries (memo, amount) VALUES ('opening; balance', 100);
