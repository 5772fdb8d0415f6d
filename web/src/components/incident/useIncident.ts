// The incident workflow's state: every input lives in the URL query (a link reproduces the view), the
// answers are loaded from it. Inputs: wfrom/wto (the incident window), baseline, client/server/port (the
// edge followed), subject (what the drill-down looks at), pvm/pfrom/pto/pfilter (the packets),
// metric (what the series, the compare and the backtest measure: traffic or application requests),
// op/thr/bucket (the backtest's signature), step (the screen shown).
import { computed, ref, watch } from 'vue'
import { useRoute, useRouter } from 'vue-router'
import { api } from '../../api/client'
import { useLoader } from '../../state/loader'
import { iso, toMillis, useTimeRange } from '../../state/timeRange'
import type { Series } from '../SeriesChart.vue'
import { stepFor } from './format'
import { isRequestMetric, metricInfo } from './metrics'
import type { BacktestResult, Change, CompareResult, Downloaded, DrillResult, Edge, PcapPreview, QueryAnswer, Selector } from './types'

export const STEPS = [
  { key: 'window', title: 'Window' },
  { key: 'compare', title: 'Compare' },
  { key: 'drill', title: 'Drill down' },
  { key: 'pcap', title: 'Packets' },
  { key: 'backtest', title: 'Backtest' },
  { key: 'conclusion', title: 'Conclusion' },
] as const
export type StepKey = (typeof STEPS)[number]['key']

export const BASELINES = [
  { key: 'before', label: 'the same span just before' },
  { key: 'yesterday', label: 'the same time yesterday' },
  { key: 'last_week', label: 'the same time last week' },
] as const

/** A series of the query API: ``filters`` as ``dim=value``. Buckets without a value (a latency where nothing
 * was answered) are left out, so the line has a gap rather than a false zero. */
export async function loadSeries(from: string, to: string, filters: string[], signal: AbortSignal,
                                 metric = 'bytes', bucket?: string): Promise<[number, number][]> {
  const step = bucket ?? stepFor(toMillis(to) - toMillis(from))
  const answer = await api<QueryAnswer>('/api/v1/query/series', {
    query: { metric, step, from, to, filter: filters },
    signal,
  })
  const t = answer.columns.indexOf('time')
  const v = answer.columns.indexOf(metric)
  return answer.rows
    .filter((r) => r[v] !== null && r[v] !== undefined)
    .map((r) => [Date.parse(String(r[t])), Number(r[v])] as [number, number])
}

export function edgeFilters(edge: Edge): string[] {
  const out = [`client_ip=${edge.client}`, `server_ip=${edge.server}`]
  if (edge.port !== null) out.push(`server_port=${edge.port}`)
  return out
}

function text(value: unknown): string | undefined {
  const v = Array.isArray(value) ? value[0] : value
  return typeof v === 'string' && v !== '' ? v : undefined
}

function minute(ms: number, up: boolean): number {
  return (up ? Math.ceil(ms / 60000) : Math.floor(ms / 60000)) * 60000
}

export function useIncident() {
  const route = useRoute()
  const router = useRouter()
  const range = useTimeRange()
  const q = (name: string) => computed(() => text(route.query[name]))

  const wfrom = q('wfrom')
  const wto = q('wto')
  const baseline = computed(() => q('baseline').value ?? 'before')
  const client = q('client')
  const server = q('server')
  const port = computed(() => {
    const p = q('port').value
    return p !== undefined && /^\d+$/.test(p) ? Number(p) : null
  })
  const subject = computed(() => (q('subject').value as 'client' | 'server' | 'edge' | undefined) ?? 'client')
  const step = computed<StepKey>(() => {
    const s = q('step').value
    return (STEPS.find((x) => x.key === s)?.key ?? 'window') as StepKey
  })

  /** Change the query (undefined drops a key); replaces the history entry unless ``push``. */
  function patch(changes: Record<string, string | number | undefined | null>, push = false): void {
    const query: Record<string, string> = {}
    for (const [k, v] of Object.entries(route.query)) {
      const t = text(v)
      if (t !== undefined) query[k] = t
    }
    for (const [k, v] of Object.entries(changes)) {
      if (v === undefined || v === null || v === '') delete query[k]
      else query[k] = String(v)
    }
    void (push ? router.push({ query }) : router.replace({ query }))
  }

  function go(key: StepKey): void {
    patch({ step: key }, true)
  }

  const window = computed(() => (wfrom.value && wto.value ? { from: wfrom.value, to: wto.value } : null))
  /** What the series, the compare and the backtest measure (one of METRICS; bytes by default). */
  const metric = computed(() => metricInfo(q('metric').value ?? 'bytes').key)
  const info = computed(() => metricInfo(metric.value))
  /** The compare's metric: derived ones (oneway) are backtest-only, the compare then ranks by bytes. */
  const compareMetric = computed(() => (info.value.comparable ? metric.value : 'bytes'))
  /** The drill-down ranks the slowest requests by the chosen request metric (p99 otherwise). */
  const drillMetric = computed(() => (isRequestMetric(metric.value) ? metric.value : 'latency_p99'))

  function selectMetric(key: string): void {
    patch({ metric: key === 'bytes' ? undefined : key, thr: undefined })
  }

  function selectWindow(fromMs: number, toMs: number): void {
    const a = minute(fromMs, false)
    const b = Math.max(minute(toMs, true), a + 60000)
    patch({ wfrom: iso(a), wto: iso(b), pfrom: undefined, pto: undefined })
  }

  // ---- the series of the shared range (all traffic, and the followed edge) --------------------
  const edgeKey = computed(() => (client.value && server.value ? `${client.value}>${server.value}:${port.value ?? ''}` : ''))
  const total = useLoader(
    (signal) => loadSeries(range.absolute.value.from, range.absolute.value.to, [], signal, info.value.series),
    [() => range.absolute.value, () => info.value.series],
  )

  // ---- compare ------------------------------------------------------------------------------
  const compare = useLoader<CompareResult | null>(async (signal) => {
    if (!window.value) return null
    return api<CompareResult>('/api/v1/analysis/compare', {
      body: {
        time_from: window.value.from, time_to: window.value.to, baseline: baseline.value, level: 'ip', limit: 20, bursts: 5,
        metric: compareMetric.value,
      },
      signal,
    })
  }, [window, baseline, compareMetric])

  /** The compare row of the followed edge (any of the three lists). */
  const change = computed<Change | null>(() => {
    const c = compare.data.value
    if (!c || !client.value) return null
    const all = [...c.edges, ...c.new_edges, ...c.vanished_edges]
    return all.find((e) => e.source === client.value && e.target === server.value
      && (port.value === null || e.server_port === port.value)) ?? null
  })

  // ---- drill-down ---------------------------------------------------------------------------
  const drillTarget = computed<Selector | null>(() => {
    if (!client.value) return null
    if (subject.value === 'server' && server.value) return { ip: server.value }
    if (subject.value === 'edge' && server.value) {
      return { client_ip: client.value, server_ip: server.value, port: port.value }
    }
    return { ip: client.value }
  })
  const drill = useLoader<DrillResult | null>(async (signal) => {
    if (!window.value || !drillTarget.value) return null
    return api<DrillResult>('/api/v1/analysis/drill', {
      body: { time_from: window.value.from, time_to: window.value.to, target: drillTarget.value, limit: 8, metric: drillMetric.value },
      signal,
    })
  }, [() => JSON.stringify([window.value, drillTarget.value, drillMetric.value])])

  /** Names the drill-down learnt (peer IP -> name), for edges the compare did not list. */
  const names = computed<Record<string, string>>(() => {
    const out: Record<string, string> = {}
    for (const p of drill.data.value?.one_way ?? []) {
      out[p.client] = p.client_name
      out[p.server] = p.server_name
    }
    for (const p of drill.data.value?.by_peer ?? []) if (p.peer_ip && p.key !== p.peer_ip) out[p.peer_ip] = p.key
    return out
  })

  const edge = computed<Edge | null>(() => {
    if (!client.value || !server.value) return null
    const c = change.value
    return {
      client: client.value,
      server: server.value,
      port: port.value,
      clientName: c?.source_name && c.source_name !== client.value ? c.source_name : names.value[client.value],
      serverName: c?.target_name && c.target_name !== server.value ? c.target_name : names.value[server.value],
      proto: c?.proto ?? null,
    }
  })

  function selectEdge(c: Change): void {
    patch({
      client: c.source, server: c.target ?? undefined, port: c.server_port ?? undefined,
      pvm: undefined, pfrom: undefined, pto: undefined, pfilter: undefined, thr: undefined,
    })
  }

  const edgeSeries = useLoader<Series | null>(async (signal) => {
    if (!edge.value) return null
    const points = await loadSeries(range.absolute.value.from, range.absolute.value.to, edgeFilters(edge.value), signal,
      info.value.series)
    return { name: 'the edge', points }
  }, [() => range.absolute.value, edgeKey, () => info.value.series])

  const push = computed(() => {
    const e = edge.value
    if (!e) return null
    return drill.data.value?.one_way.find((p) => p.client === e.client && p.server === e.server
      && (e.port === null || p.server_port === e.port)) ?? null
  })

  // ---- packets ------------------------------------------------------------------------------
  const firstBurst = computed(() => change.value?.bursts?.[0] ?? null)
  const pcapDefaults = computed(() => {
    const e = edge.value
    const startMs = firstBurst.value ? Date.parse(firstBurst.value.start) : window.value ? toMillis(window.value.from) : null
    const filter = e ? [`host ${e.server}`, e.port !== null ? `port ${e.port}` : ''].filter(Boolean).join(' and ') : ''
    return {
      vm: e ? e.clientName ?? e.client : '',
      from: startMs === null ? '' : iso(startMs),
      to: startMs === null ? '' : iso(startMs + 60000),
      filter,
    }
  })
  const pcap = computed(() => ({
    vm: q('pvm').value ?? pcapDefaults.value.vm,
    from: q('pfrom').value ?? pcapDefaults.value.from,
    to: q('pto').value ?? pcapDefaults.value.to,
    filter: q('pfilter').value ?? pcapDefaults.value.filter,
  }))
  const preview = ref<PcapPreview | null>(null)
  const downloaded = ref<Downloaded | null>(null)
  watch(() => JSON.stringify(pcap.value), () => {
    preview.value = null
  })

  // ---- backtest -----------------------------------------------------------------------------
  const op = computed(() => q('op').value ?? 'gt')
  const bucket = computed(() => q('bucket').value ?? '1m')
  /** The threshold: the URL's, else a quarter of the burst's peak minute (as the CLI demo does); for a
   * latency or a rate (not sums), halfway between the baseline's value and the burst's peak (or the window's). */
  const threshold = computed<number | null>(() => {
    const t = q('thr').value
    if (t !== undefined && !Number.isNaN(Number(t))) return Number(t)
    if (window.value && compare.loading.value && !compare.data.value) return null // wait for the burst
    const b = firstBurst.value
    const c = change.value
    if (!info.value.additive) {
      const round = (v: number) => (info.value.unit === 'ratio' ? Math.round(v * 1000) / 1000 : Math.round(v * 10) / 10)
      const high = b?.peak ?? c?.value
      if (c && high !== undefined && high > c.expected) return round((c.expected + high) / 2)
      return info.value.unit === 'ratio' ? 0.05 : info.value.unit === 'ms' ? 100 : 10
    }
    if (b) return Math.round(b.peak / 4)
    if (c && window.value) {
      const minutes = Math.max(1, (toMillis(window.value.to) - toMillis(window.value.from)) / 60000)
      return Math.round(c.value / minutes / 4)
    }
    return 1 << 20
  })
  const signature = computed(() => {
    const e = edge.value
    if (!e || threshold.value === null) return null
    const filter: Selector = { ip: e.client, peer: e.server }
    if (e.port !== null) filter.port = e.port
    return {
      filter,
      condition: { metric: metric.value, test: 'value' as const, op: op.value, threshold: threshold.value },
      step: bucket.value,
      min_buckets: 1,
      max_gap: 0,
    }
  })
  const backtest = useLoader<BacktestResult | null>(async (signal) => {
    if (!signature.value) return null
    return api<BacktestResult>('/api/v1/analysis/backtest', { body: { signature: signature.value }, signal })
  }, [() => JSON.stringify(signature.value)])
  const backtestSeries = useLoader<Series | null>(async (signal) => {
    const b = backtest.data.value
    if (!b?.scanned || !edge.value) return null
    const name = info.value.series
    // at the signature's bucket (the threshold applies per bucket) unless that is too many points
    const fine = (Date.parse(b.scanned.to) - Date.parse(b.scanned.from)) / 1000 / b.step_s <= 3000
    const points = await loadSeries(b.scanned.from, b.scanned.to, edgeFilters(edge.value), signal, name, fine ? bucket.value : undefined)
    return { name, points }
  }, [() => JSON.stringify(backtest.data.value?.scanned), edgeKey, () => info.value.series])

  return {
    range, wfrom, wto, window, baseline, client, server, port, subject, step, patch, go, selectWindow,
    total, compare, change, edge, selectEdge, edgeSeries, drill, push, names, firstBurst,
    pcap, pcapDefaults, preview, downloaded, metric, info, compareMetric, drillMetric, selectMetric, op, bucket, threshold,
    signature, backtest, backtestSeries,
  }
}

export type Incident = ReturnType<typeof useIncident>
