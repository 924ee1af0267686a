-- The commit probe: one small durable commit, on a table of its own, that bench/run.sh runs at a low fixed
-- rate from one pgbench client beside each accept latency step. A stall in the server's commits (a WAL
-- flush held up by the disk) shows in its latencies as it does in posthorn's, and says which side it was.
INSERT INTO bench_commit_probe (at) VALUES (now());
