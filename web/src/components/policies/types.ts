// A policy as GET /api/v1/policies answers it (src/cloudtap/server/controller/policy.py).

export interface PolicyDoc {
  name: string
  priority: number
  enabled: boolean
  select: { project?: string | null; vm?: string | null; subnet?: string | null; host?: string | null; tag?: string | null }
  bpf: string | null
  action: { capture: boolean; snaplen: number | null; store_packets: boolean }
}
