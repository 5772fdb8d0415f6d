// The metrics the incident workflow follows: traffic (edge rollups) and application requests (request rollups).
// One `metric` in the URL drives the series, the compare and the backtest; each knows its unit and how the
// query API names it.
import { bytes, count, pct } from './format'

export type Unit = 'bytes' | 'count' | 'ms' | 'ratio'

export interface MetricInfo {
  key: string
  label: string
  group: 'Traffic' | 'Requests'
  unit: Unit
  /** the query API's metric drawn for it (/query/series) */
  series: string
  /** a window's value is the sum of its buckets' (bytes, requests); latencies and rates are not */
  additive: boolean
  /** the compare accepts it (derived metrics such as `oneway` are backtest-only) */
  comparable: boolean
}

const m = (key: string, label: string, group: MetricInfo['group'], unit: Unit, series: string, additive = true,
  comparable = true): MetricInfo => ({ key, label, group, unit, series, additive, comparable })

export const METRICS: MetricInfo[] = [
  m('bytes', 'bytes', 'Traffic', 'bytes', 'bytes'),
  m('bytes_c2s', 'bytes client → server', 'Traffic', 'bytes', 'bytes_c2s'),
  m('bytes_s2c', 'bytes server → client', 'Traffic', 'bytes', 'bytes_s2c'),
  m('packets', 'packets', 'Traffic', 'count', 'packets'),
  m('flows', 'flows opened', 'Traffic', 'count', 'flows_opened'),
  m('failed', 'failed connections', 'Traffic', 'count', 'flows_failed'),
  m('retrans', 'retransmissions', 'Traffic', 'count', 'retrans'),
  m('oneway', 'one-way ratio', 'Traffic', 'count', 'bytes', false, false),
  m('requests', 'requests', 'Requests', 'count', 'requests'),
  m('errors', 'failed requests', 'Requests', 'count', 'errors'),
  m('error_rate', 'error rate', 'Requests', 'ratio', 'error_rate', false),
  m('latency_avg', 'latency mean (ms)', 'Requests', 'ms', 'latency_avg', false),
  m('latency_p50', 'latency p50 (ms)', 'Requests', 'ms', 'latency_p50', false),
  m('latency_p90', 'latency p90 (ms)', 'Requests', 'ms', 'latency_p90', false),
  m('latency_p99', 'latency p99 (ms)', 'Requests', 'ms', 'latency_p99', false),
  m('latency_max', 'latency max (ms)', 'Requests', 'ms', 'latency_max', false),
]
export const METRIC_GROUPS = ['Traffic', 'Requests'] as const

export function metricInfo(key: string): MetricInfo {
  return METRICS.find((x) => x.key === key) ?? METRICS[0]
}

export function isRequestMetric(key: string): boolean {
  return metricInfo(key).group === 'Requests'
}

/** A number of milliseconds without the unit: "0.42", "12.3", "1,250" (3 significant digits at least). */
export function msNumber(value: number | null | undefined): string {
  if (value === null || value === undefined || Number.isNaN(value)) return '–'
  const a = Math.abs(value)
  const digits = a >= 100 ? 0 : a >= 10 ? 1 : 2
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

/** Milliseconds: "0.42 ms", "12.3 ms", "1,250 ms". */
export function ms(value: number | null | undefined): string {
  const n = msNumber(value)
  return n === '–' ? n : `${n} ms`
}

/** A value of ``unit`` as the workflow shows it. */
export function formatValue(value: number | null | undefined, unit: Unit): string {
  if (unit === 'bytes') return bytes(value)
  if (unit === 'ms') return ms(value)
  if (unit === 'ratio') return pct(value, 1)
  if (value === null || value === undefined) return '–'
  return Number.isInteger(value) ? count(value) : value.toLocaleString('en-US', { maximumFractionDigits: 1 })
}

/** A signed change: "+66 MiB", "+18.2 ms", "+3.1%". */
export function formatChange(value: number, unit: Unit): string {
  const text = formatValue(Math.abs(value), unit)
  return value >= 0 ? `+${text}` : `−${text}`
}

export const NO_REQUESTS = 'no application requests parsed for this edge (enable payload capture on its policy)'
