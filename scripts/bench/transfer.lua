-- wrk script for POST /v1/transfers: the token, payee and (for an operator) the paying account
-- come from the environment (scripts/bench-api sets them).
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer " .. os.getenv("SLUICE_BENCH_TOKEN")
local payer = os.getenv("SLUICE_BENCH_PAYER")
local account = payer and ('"user_id": "' .. payer .. '", ') or ""
wrk.body = '{' .. account .. '"payee_user_id": "' .. os.getenv("SLUICE_BENCH_PAYEE") .. '", "amount": "1.00", "reference": "bench"}'
