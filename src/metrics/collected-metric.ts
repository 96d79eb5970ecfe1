// A Prometheus metric whose values are read, at scrape time, from plain numbers the server keeps itself.
//
// Why not prom-client's Counter and Histogram: their `inc` and `observe`, even on a child from
// `labels(...)`, hash the label object into a string on every call; the read path answers a narinfo in a
// few microseconds and must pay next to nothing for being counted (docs/benchmarks.md). So the hot paths
// add to numbers in objects made once per cache and route kind (src/metrics/server-metrics.ts), and this
// class turns them into prom-client's metric shape only when Prometheus asks. prom-client still owns the
// registry, the text format and its escaping, and the process metrics.
import type { Metric, Registry } from 'prom-client';

export type MetricKind = 'counter' | 'gauge' | 'histogram';

/**
 * How the values of several processes combine (prom-client's AggregatorRegistry, used by `niche serve
 * --workers N`): counters, histograms and gauges of things each process holds (connections, sessions) add
 * up; a gauge that only one process sets (a timestamp) takes the largest.
 */
export type MetricAggregator = 'sum' | 'max';

export interface Sample {
  readonly labels: Readonly<Record<string, string | number>>;
  readonly value: number;
  /** For a histogram's `_bucket`, `_sum` and `_count` lines. */
  readonly metricName?: string;
}

export class CollectedMetric {
  readonly name: string;
  readonly help: string;
  readonly type: MetricKind;
  readonly aggregator: MetricAggregator;
  readonly #read: () => Sample[];

  constructor(
    name: string,
    help: string,
    type: MetricKind,
    read: () => Sample[],
    aggregator: MetricAggregator = 'sum',
  ) {
    this.name = name;
    this.help = help;
    this.type = type;
    this.#read = read;
    this.aggregator = aggregator;
  }

  /** What prom-client's registry reads (the same shape its own metrics return). */
  get(): Promise<{
    name: string;
    help: string;
    type: MetricKind;
    aggregator: string;
    values: Sample[];
  }> {
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values: this.#read(),
    });
  }

  /**
   * Adds this metric to `registry`. The registry only ever calls `get()` and reads `name` (and `type`,
   * `aggregator`); its TypeScript signature names prom-client's own classes, hence the one cast.
   */
  register(registry: Registry): this {
    registry.registerMetric(this as unknown as Metric);
    return this;
  }
}

/**
 * A distribution over fixed bucket bounds (seconds), counted with a few comparisons and two additions:
 * `counts[i]` holds observations in bucket i alone (the last one: above every bound); made cumulative when
 * rendered, as Prometheus wants.
 */
export class Distribution {
  readonly bounds: readonly number[];
  readonly counts: Float64Array;
  sum = 0;

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] ?? Infinity)) i++;
    this.counts[i] = (this.counts[i] ?? 0) + 1;
    this.sum += value;
  }

  /** One observation known to be in the lowest bucket, its value not measured (and left out of the sum). */
  countFastest(): void {
    this.counts[0] = (this.counts[0] ?? 0) + 1;
  }

  /** The `_bucket`, `_sum` and `_count` samples of `name` with `labels`. */
  samples(name: string, labels: Readonly<Record<string, string>>): Sample[] {
    const samples: Sample[] = [];
    let cumulative = 0;
    for (let i = 0; i < this.counts.length; i++) {
      cumulative += this.counts[i] ?? 0;
      const le = i < this.bounds.length ? String(this.bounds[i]) : '+Inf';
      samples.push({ metricName: `${name}_bucket`, labels: { ...labels, le }, value: cumulative });
    }
    samples.push({ metricName: `${name}_sum`, labels, value: this.sum });
    samples.push({ metricName: `${name}_count`, labels, value: cumulative });
    return samples;
  }
}
