-- A table, a PL/pgSQL trigger with a dollar-quoted body and percent signs.

CREATE TABLE fx_entries (
    id     bigserial PRIMARY KEY,
    memo   text NOT NULL,
    amount bigint NOT NULL
);

CREATE FUNCTION fx_reject_blank_memo() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Semicolons; and 'quotes' inside the body must not split the statement.
    IF btrim(NEW.memo) = '' OR NEW.memo LIKE '%forbidden%' THEN
        RAISE EXCEPTION 'memo % is not allowed; pick another', quote_literal(NEW.memo);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER fx_entries_memo BEFORE INSERT ON fx_entries
    FOR EACH ROW EXECUTE FUNCTION fx_reject_blank_memo();
