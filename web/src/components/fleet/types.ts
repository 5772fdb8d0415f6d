// What the fleet and controller routes answer (see src/cloudtap/server/api/routes/fleet.py, controller.py).

export interface AgentRow {
  id: string
  name: string
  host: string
  group: string
  version: string
  mode: string
  last_seen_s: number | null
  stale: boolean
  capturing: boolean
  paused_by: string[]
  config_version: number
  applied_version: number
  restart_required: string[]
  control_url: string
  control_url_refused: number
  control_url_error: string
  cpu: number
  memory: number
  load: number
  pps: number
  bps: number
  shipped_bps: number
  /** packet copies the broker sent to tools (bits/s); absent from servers before distribution */
  forwarded_bps?: number
  /** copies dropped by a destination cap, the host fuse or send errors (over the window) */
  forward_drops?: number
  drops: number
}

export interface HostRow {
  host: string
  address: string
  agents: string[]
  load: number
  cores: number
  stale: boolean
  load_per_core: number | null
}

export interface GroupRow {
  name: string
  overlay: Record<string, unknown>
  version: number
  description: string
  updated_at: number
  agents: number
}

export interface VmInterface {
  name: string
  mac: string | null
  domain: string | null
  packets: number
  kernel_drops: number
}

export interface AgentStatus {
  version: string
  mode: string
  uptime_s: number
  capturing: boolean
  paused_by: string[]
  breaker_trips: number
  breaker_tripped: boolean
  cpu_percent: number
  rss_bytes: number
  load1: number
  cores: number
  captured_packets: number
  captured_bytes: number
  record_bytes: number
  records: number
  kernel_drops: number
  meter_drops: number
  pps_limit_drops: number
  interfaces: VmInterface[]
  config_version: number
  restart_required: string[]
  config_error: string
  ship_pending_batches: number
  errors: string[]
  control_url: string
}

export interface AgentDetail {
  agent: {
    id: string
    name: string
    hostname: string
    machine_id: string
    address: string
    group: string
    version: string
    mode: string
    heartbeat_s: number
    registered_at: number
    last_seen: number
    config_version: number
    control_url: string
  }
  stale: boolean
  status: AgentStatus | null
  config: {
    version: number
    group: string
    overlay: Record<string, unknown>
    policy: CompiledPolicy
    apply: Record<string, string>
  }
  control_url_refused: number
  control_url_error: string
}

export interface CompiledPolicy {
  active: boolean
  capture: boolean
  interfaces: string[]
  macs: string[]
  bpf: string | null
  snaplen: number | null
  store_packets: boolean
  policies: string[]
  vms?: string[]
  name?: string
  host?: string
}

export interface CommandState {
  id: number
  agent_id: string
  action: string
  issued_at: number
  delivered_at: number | null
  done_at: number | null
  ok: boolean | null
  detail: string
}
