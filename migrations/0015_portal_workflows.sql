-- The portal starts engagements itself, as the API role under row-level security: the
-- engagement row and its audit entry are written in the request's transaction, so the
-- role may insert engagements (of the client the transaction names, by the policy).

GRANT INSERT ON engagements TO advisoros_api;

-- The per-user rate limit of the portal, shared by every instance that serves the API: a
-- token bucket per user (PORTAL_RATE_LIMIT_PER_MIN a minute, in bursts up to that), taken
-- by the statement that also finds the signed-in user, so a request pays one round trip for
-- both. The buckets are UNLOGGED: a crash or a failover forgets them (every user starts
-- with a full bucket), and in exchange taking a token writes no WAL and waits for no flush.
CREATE UNLOGGED TABLE portal_rate_buckets (
    user_id    uuid PRIMARY KEY,
    tokens     double precision NOT NULL,
    updated_at timestamptz NOT NULL
);

-- The user with this sign-in name (no row when there is none), and the seconds to wait
-- before the next request when the user's bucket is empty (0: a token was taken, or no
-- limit was asked for: p_per_minute NULL). Only an active user with a role takes a token. SECURITY DEFINER: the API role can neither
-- read other firms' users nor touch the buckets except through this function.
CREATE FUNCTION portal_sign_in(p_user_name text, p_per_minute integer)
RETURNS TABLE (id uuid, firm_id uuid, role text, client_id uuid, active boolean,
               retry_after_s integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    found_user users%ROWTYPE;
    rate constant double precision := p_per_minute / 60.0;
    now_at constant timestamptz := clock_timestamp();
    bucket record;
    level double precision;
    wait_s integer := 0;
BEGIN
    SELECT * INTO found_user FROM users u WHERE lower(u.user_name) = lower(p_user_name);
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF p_per_minute IS NOT NULL AND found_user.active AND found_user.role IS NOT NULL THEN
        INSERT INTO portal_rate_buckets AS b (user_id, tokens, updated_at)
        VALUES (found_user.id, p_per_minute, now_at)
        ON CONFLICT (user_id) DO NOTHING;
        SELECT b.tokens, b.updated_at INTO bucket
        FROM portal_rate_buckets b WHERE b.user_id = found_user.id FOR UPDATE;
        level := least(p_per_minute::double precision,
                       bucket.tokens
                       + greatest(0, extract(epoch FROM now_at - bucket.updated_at)) * rate);
        IF level >= 1 THEN
            level := level - 1;
        ELSE
            wait_s := floor((1 - level) / rate)::integer + 1;
        END IF;
        UPDATE portal_rate_buckets SET tokens = level, updated_at = now_at
        WHERE user_id = found_user.id;
    END IF;
    RETURN QUERY SELECT found_user.id, found_user.firm_id, found_user.role,
                        found_user.client_id, found_user.active, wait_s;
END
$$;
REVOKE ALL ON FUNCTION portal_sign_in(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION portal_sign_in(text, integer) TO advisoros_api;
