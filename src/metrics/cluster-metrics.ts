// The metrics of `niche serve --workers N`: every process counts its own requests, connections and
// sessions, and a scrape must see the whole server, not whichever worker accepted the scrape's
// connection. The primary gathers each process's snapshot (ServerMetrics.snapshot, over the cluster's IPC
// channel) and sums them with prom-client's AggregatorRegistry, metric by metric with each metric's
// aggregator (src/metrics/collected-metric.ts): counters and histograms add, gauges of what each process
// holds (open connections, SSH sessions, uploads in progress) add, the time of the last collection takes
// the largest; of prom-client's process metrics, CPU and memory add up to the whole server's, and the
// start time is left out.
import { AggregatorRegistry } from 'prom-client';
import type { MetricsSnapshot } from './server-metrics.js';

/** The Prometheus text of the sum of `snapshots` (one per process). */
export async function aggregateMetrics(snapshots: readonly MetricsSnapshot[]): Promise<string> {
  return AggregatorRegistry.aggregate([...snapshots]).metrics();
}
