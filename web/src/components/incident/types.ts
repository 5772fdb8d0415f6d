// The analysis API's answers the incident workflow reads (src/cloudtap/server/analyse, routes/pcap.py).

export interface Burst {
  start: string
  end: string
  buckets: number
  total: number
  peak: number
  peak_z: number
}

export interface Change {
  source: string
  source_name: string
  target: string | null
  target_name: string | null
  server_port: number | null
  proto: string | null
  /** request metrics: the application protocol (http, dns, mysql, pgsql, redis) */
  l7_proto?: string | null
  status: 'new' | 'vanished' | 'changed'
  value: number
  baseline_value: number
  expected: number
  abs_change: number
  rel_change: number | null
  z: number | null
  baseline_median: number
  baseline_sigma: number | null
  bursts: Burst[] | null
}

export interface CompareResult {
  window: { from: string; to: string }
  baseline: { from: string; to: string }
  level: string
  metric: string
  step_s: number
  rank_by: string
  edges: Change[]
  endpoints: Change[]
  new_edges: Change[]
  vanished_edges: Change[]
  counts: Record<string, number>
  elapsed_ms: number
}

export interface Part {
  key: string
  peer_ip: string | null
  role: string | null
  bytes: number
  bytes_out: number
  bytes_in: number
  packets: number
  flows: number
  failed: number
  share: number
}

export interface Push {
  client: string
  client_name: string
  server: string
  server_name: string
  server_port: number
  proto: string
  direction: string
  bytes_forward: number
  bytes_back: number
  ratio: number
  from_ip: string
  to_ip: string
}

export interface Talker {
  client: string
  client_port: number
  server: string
  server_port: number
  proto: string
  bytes_c2s: number
  bytes_s2c: number
  first: string
  last: string
  close_type: string
}

export interface FailedHandshake {
  client: string
  server: string
  server_port: number
  proto: string
  close_type: string
  count: number
  first: string
  last: string
}

/** Requests of one group (an edge, a service, a statement); latencies in ms, null without answers. */
export interface RequestStats {
  requests: number
  errors: number
  client_errors: number
  server_errors: number
  timeouts: number
  answered: number
  error_rate: number
  latency_avg_ms: number | null
  latency_p50_ms: number | null
  latency_p90_ms: number | null
  latency_p99_ms: number | null
  latency_max_ms: number | null
}

/** One statement / path / query name of the drill-down's subject. */
export interface SlowRequest {
  role: string
  l7_proto: string
  server_port: number
  request_type: string
  resource: string
  stats: RequestStats
}

export interface ErrorCode {
  role: string
  l7_proto: string
  status: string
  code: number
  error: string
  count: number
  resources: string[]
}

export interface RolePart {
  role: string
  stats: RequestStats
}

export interface DrillResult {
  window: { from: string; to: string }
  target: string
  total_bytes: number
  by_peer: Part[]
  by_port: Part[]
  by_proto: Part[]
  by_direction: Part[]
  by_close_type: Part[]
  one_way: Push[]
  top_talkers: Talker[]
  failed_handshakes: FailedHandshake[]
  failed_total: number
  /** the subject's application requests (servers that parse them) */
  requests?: RolePart[]
  slowest?: SlowRequest[]
  error_codes?: ErrorCode[]
  metric?: string
  elapsed_ms: number
}

export interface Selector {
  vm?: string | null
  ip?: string | null
  peer?: string | null
  peer_vm?: string | null
  port?: number | null
  proto?: string | number | null
  project?: string | null
  host?: string | null
  client_ip?: string | null
  server_ip?: string | null
}

export interface Signature {
  name?: string | null
  description?: string
  filter: Selector
  condition: { metric: string; test: 'value' | 'zscore'; op: string; threshold: number }
  step: string
  min_buckets: number
  max_gap: number
}

export interface Occurrence {
  start: string
  end: string
  buckets: number
  total: number
  peak: number
}

export interface Period {
  period_s: number
  spread_s: number
  resolution_s: number
  regularity: number
  cycles: number
  next_expected: string
  text: string
}

export interface BacktestResult {
  signature: Signature
  describe: string
  scanned: { from: string; to: string } | null
  step_s: number
  buckets: number
  matching_buckets: number
  count: number
  occurrences: Occurrence[]
  period: Period | null
  median: number
  sigma: number
  elapsed_ms: number
}

export interface PcapPreview {
  packets: number | null
  bytes: number
  over_cap: boolean
  max_bytes: number
  detail: string | null
  interfaces: string[]
  targets: { agent: string | null; interfaces: string[] }[]
  from: string
  to: string
  filter: string | null
  filename: string
}

export interface Downloaded {
  filename: string
  bytes: number
  packets: number | null
  from: string
  to: string
  vm: string
  filter: string
}

/** The edge the workflow follows: client -> server:port. */
export interface Edge {
  client: string
  server: string
  port: number | null
  clientName?: string
  serverName?: string
  proto?: string | null
}

export interface QueryAnswer {
  columns: string[]
  rows: unknown[][]
}
