-- wrk script for POST /v1/transfers: the token and payee come from the environment
-- (scripts/bench-api sets them).
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer " .. os.getenv("SLUICE_BENCH_TOKEN")
wrk.body = '{"payee_user_id": "' .. os.getenv("SLUICE_BENCH_PAYEE") .. '", "amount": "1.00", "reference": "bench"}'
