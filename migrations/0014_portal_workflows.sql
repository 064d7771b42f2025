-- The portal starts engagements itself, as the API role under row-level security: the
-- engagement row and its audit entry are written in the request's transaction, so the
-- role may insert engagements (of the client the transaction names, by the policy).

GRANT INSERT ON engagements TO advisoros_api;
-- A review decision is recorded once per review: the decisions already audited for an
-- engagement are found by this index before another is written.
CREATE INDEX audit_log_review_decisions_idx ON audit_log (subject)
    WHERE action LIKE 'engagement.review.%';

-- The per-user rate limit of the portal, shared by every instance that serves the API: a
-- token bucket per user (PORTAL_RATE_LIMIT_PER_MIN a minute, in bursts up to that), taken
-- by the statement that also finds the signed-in user, so a request pays one round trip for
-- both. The buckets are UNLOGGED: a crash or a failover forgets them (every user starts
-- with a full bucket), and in exchange taking a token writes no WAL and waits for no flush.
CREATE UNLOGGED TABLE portal_rate_buckets (
    user_id    uuid PRIMARY KEY,
    tokens     double precision NOT NULL,
    updated_at timestamptz NOT NULL,
    -- Whether the last request found the bucket empty (and took nothing).
    refused    boolean NOT NULL
);

-- The user with this sign-in name (no row when there is none), and the seconds to wait
-- before the next request when the user's bucket is empty (0: a token was taken, or no
-- limit was asked for: p_per_minute NULL). Only an active user with a role takes a token.
-- SECURITY DEFINER: the API role can neither read other firms' users nor touch the
-- buckets except through this function.
CREATE FUNCTION portal_sign_in(p_user_name text, p_per_minute integer)
RETURNS TABLE (id uuid, firm_id uuid, role text, client_id uuid, active boolean,
               retry_after_s integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    found_user users%ROWTYPE;
    rate constant double precision := p_per_minute / 60.0;
    now_at constant timestamptz := clock_timestamp();
    level double precision;
    was_refused boolean := false;
BEGIN
    SELECT * INTO found_user FROM users u WHERE lower(u.user_name) = lower(p_user_name);
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF p_per_minute IS NOT NULL AND found_user.active AND found_user.role IS NOT NULL THEN
        -- One statement refills the bucket for the time since its last request and takes
        -- a token when there is a whole one (every SET expression reads the old row).
        INSERT INTO portal_rate_buckets AS b (user_id, tokens, updated_at, refused)
        VALUES (found_user.id, p_per_minute - 1, now_at, false)
        ON CONFLICT (user_id) DO UPDATE SET
            refused = least(p_per_minute, b.tokens + greatest(0, extract(epoch FROM
                          now_at - b.updated_at)) * rate) < 1,
            tokens = least(p_per_minute, b.tokens + greatest(0, extract(epoch FROM
                         now_at - b.updated_at)) * rate)
                     - CASE WHEN least(p_per_minute, b.tokens + greatest(0, extract(epoch
                                FROM now_at - b.updated_at)) * rate) >= 1
                            THEN 1 ELSE 0 END,
            updated_at = now_at
        RETURNING b.tokens, b.refused INTO level, was_refused;
    END IF;
    RETURN QUERY SELECT found_user.id, found_user.firm_id, found_user.role,
                        found_user.client_id, found_user.active,
                        CASE WHEN was_refused THEN floor((1 - level) / rate)::integer + 1
                             ELSE 0 END;
END
$$;
REVOKE ALL ON FUNCTION portal_sign_in(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION portal_sign_in(text, integer) TO advisoros_api;

-- A portal request's transaction in one statement: the three settings row-level security
-- reads (see 0005), and, when the route names a client, that client as the transaction's
-- client if the user may see it, with the same rule as the clients policy (0009): a client
-- of the user's firm, and the user's own client for a client user. False when it may not
-- (nothing visible is then set beyond the user's own scope).
CREATE FUNCTION portal_enter(p_firm uuid, p_client uuid, p_user uuid, p_route_client uuid)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM set_config('app.firm_id', p_firm::text, true),
            set_config('app.client_id', coalesce(p_client::text, ''), true),
            set_config('app.user_id', p_user::text, true);
    IF p_route_client IS NULL THEN
        RETURN true;
    END IF;
    IF p_client IS NOT NULL AND p_client <> p_route_client THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM clients c WHERE c.id = p_route_client AND c.firm_id = p_firm)
    THEN
        RETURN false;
    END IF;
    PERFORM set_config('app.client_id', p_route_client::text, true);
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION portal_enter(uuid, uuid, uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION portal_enter(uuid, uuid, uuid, uuid) TO advisoros_api;
