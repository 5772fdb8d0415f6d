// The topology API's shapes (POST /api/v1/analysis/topology) and what the panorama derives from them.
// With a request metric (colour by request p99 or error rate) the API answers the request graph: one edge per
// client -> server service port, carrying ``requests`` (counts, error rate, latencies in ms) and no bytes.
import type { RequestStats } from '../incident/types'

export const LEVELS = ['project', 'host', 'subnet', 'vm', 'ip'] as const
export type Level = (typeof LEVELS)[number]
export const LEVEL_LABEL: Record<Level, string> = {
  project: 'Projects',
  host: 'Hosts',
  subnet: 'Subnets',
  vm: 'VMs',
  ip: 'IPs',
}

export interface TopoNode {
  id: string
  name: string
  level: string
  bytes_as_client: number
  bytes_as_server: number
  peers: number
  requests_as_client?: number
  requests_as_server?: number
  /** vm, ip and subnet levels (servers that know it) */
  project?: string | null
}

export interface TopoEdge {
  source: string
  target: string
  source_name: string
  target_name: string
  server_port: number | null
  proto: string | null
  /** request graph: the application protocol */
  l7_proto?: string | null
  ports: number[]
  bytes: number
  bytes_c2s: number
  bytes_s2c: number
  packets: number
  flows: number
  failed: number
  retrans: number
  rtt_sum_us: number
  rtt_count: number
  rtt_mean_us: number | null
  /** request graph: the edge's requests */
  requests?: RequestStats | null
}

export interface Topology {
  level: string
  window: { from: string; to: string }
  stored_table: string
  metric?: string
  nodes: TopoNode[]
  edges: TopoEdge[]
  edges_total: number
  truncated: boolean
  elapsed_ms: number
}

export type ColourBy = 'failed' | 'retrans' | 'p99' | 'error_rate'
export const COLOUR_LABEL: Record<ColourBy, string> = {
  failed: 'failed connections',
  retrans: 'retransmissions',
  p99: 'request latency p99',
  error_rate: 'request error rate',
}
/** The topology metric a colour asks for: request colours read the request graph. */
export const COLOUR_METRIC: Record<ColourBy, string> = { failed: 'bytes', retrans: 'bytes', p99: 'latency_p99', error_rate: 'error_rate' }

export function byRequests(by: ColourBy): boolean {
  return by === 'p99' || by === 'error_rate'
}

/** A stable id of an edge (source, target and, when split by port, port/proto). */
export function edgeId(e: TopoEdge): string {
  return `${e.source}>${e.target}${e.server_port != null ? `:${e.server_port}/${e.l7_proto ?? e.proto}` : ''}`
}

/** The median request p99 of ``edges`` (ms; the reference the p99 colour compares with). */
export function medianP99(edges: TopoEdge[]): number {
  const v = edges.map((e) => e.requests?.latency_p99_ms).filter((x): x is number => x != null).sort((a, b) => a - b)
  if (!v.length) return 0
  const mid = Math.floor(v.length / 2)
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2
}

/** How bad an edge is: failed connections per flow, retransmissions per packet, failed requests per request, or its
 * request p99 over ``reference`` (the drawn edges' median p99). */
export function badness(e: TopoEdge, by: ColourBy, reference = 0): number {
  if (by === 'failed') return e.flows ? e.failed / e.flows : 0
  if (by === 'retrans') return e.packets ? e.retrans / e.packets : 0
  if (by === 'error_rate') return e.requests?.error_rate ?? 0
  const p99 = e.requests?.latency_p99_ms
  return p99 != null && reference > 0 ? p99 / reference : 0
}

/** Health class: failures good below 1 %, warn below 5 %, bad above; a tenth of that for retransmissions; the same
 * as failures for the request error rate; request p99 warn from twice the median edge's, bad from four times. */
export function health(e: TopoEdge, by: ColourBy, reference = 0): 'good' | 'warn' | 'bad' {
  const r = badness(e, by, reference)
  const [warn, bad] = { failed: [0.01, 0.05], retrans: [0.002, 0.01], error_rate: [0.01, 0.05], p99: [2, 4] }[by]
  return r >= bad ? 'bad' : r >= warn ? 'warn' : 'good'
}

/** Two edges' requests as one (a project-bound user's merged "other projects"): counts add up; latencies cannot be
 * merged from percentiles, so the merged edge keeps the higher one (an upper bound). */
export function mergeRequests(a: RequestStats, b: RequestStats): RequestStats {
  const hi = (x: number | null, y: number | null) => (x == null ? y : y == null ? x : Math.max(x, y))
  const requests = a.requests + b.requests
  const answered = a.answered + b.answered
  const errors = a.errors + b.errors
  return {
    requests, errors, answered, client_errors: a.client_errors + b.client_errors, server_errors: a.server_errors + b.server_errors,
    timeouts: a.timeouts + b.timeouts, error_rate: requests ? errors / requests : 0,
    latency_avg_ms: answered ? ((a.latency_avg_ms ?? 0) * a.answered + (b.latency_avg_ms ?? 0) * b.answered) / answered : null,
    latency_p50_ms: hi(a.latency_p50_ms, b.latency_p50_ms), latency_p90_ms: hi(a.latency_p90_ms, b.latency_p90_ms),
    latency_p99_ms: hi(a.latency_p99_ms, b.latency_p99_ms), latency_max_ms: hi(a.latency_max_ms, b.latency_max_ms),
  }
}

/** Milliseconds of a request latency. */
export function formatMs(v: number | null | undefined): string {
  if (v == null) return '—'
  return `${v >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(v >= 10 ? 1 : 2)} ms`
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let i = 0
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`
}

export function formatCount(n: number): string {
  return n.toLocaleString('en-US')
}

export function formatPercent(r: number): string {
  if (r === 0) return '0 %'
  if (r < 0.001) return '<0.1 %'
  return `${(r * 100).toFixed(r < 0.1 ? 1 : 0)} %`
}

export function ports(e: TopoEdge): string {
  if (e.server_port != null) return `${e.server_port}/${e.l7_proto ?? e.proto ?? ''}`
  const shown = e.ports.slice(0, 4).join(', ')
  return e.ports.length > 4 ? `${shown}, …` : shown
}
