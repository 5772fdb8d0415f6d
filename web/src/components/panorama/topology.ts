// The topology API's shapes (POST /api/v1/analysis/topology) and what the panorama derives from them.

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
}

export interface Topology {
  level: string
  window: { from: string; to: string }
  stored_table: string
  nodes: TopoNode[]
  edges: TopoEdge[]
  edges_total: number
  truncated: boolean
  elapsed_ms: number
}

export type ColourBy = 'failed' | 'retrans'

/** A stable id of an edge (source, target and, when split by port, port/proto). */
export function edgeId(e: TopoEdge): string {
  return `${e.source}>${e.target}${e.server_port != null ? `:${e.server_port}/${e.proto}` : ''}`
}

/** The share of an edge that went wrong: failed connections per flow, or retransmissions per packet. */
export function badness(e: TopoEdge, by: ColourBy): number {
  if (by === 'failed') return e.flows ? e.failed / e.flows : 0
  return e.packets ? e.retrans / e.packets : 0
}

/** Health class of a share: good below 1 %, warn below 5 %, bad above (failures); a tenth of that for retransmissions. */
export function health(e: TopoEdge, by: ColourBy): 'good' | 'warn' | 'bad' {
  const r = badness(e, by)
  const [warn, bad] = by === 'failed' ? [0.01, 0.05] : [0.002, 0.01]
  return r >= bad ? 'bad' : r >= warn ? 'warn' : 'good'
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
  if (e.server_port != null) return `${e.server_port}/${e.proto ?? ''}`
  const shown = e.ports.slice(0, 4).join(', ')
  return e.ports.length > 4 ? `${shown}, …` : shown
}
