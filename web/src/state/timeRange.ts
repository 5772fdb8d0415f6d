// The one time range every page shares. It lives in the URL (?from=&to=), so a link reproduces the view.
// Values are what the API takes: ``now``, ``now-1h`` or an ISO 8601 instant.
import { computed } from 'vue'
import { useRoute, useRouter } from 'vue-router'

export interface Preset {
  label: string
  from: string
  to: string
}

export const PRESETS: Preset[] = [
  { label: 'Last 15 minutes', from: 'now-15m', to: 'now' },
  { label: 'Last hour', from: 'now-1h', to: 'now' },
  { label: 'Last 6 hours', from: 'now-6h', to: 'now' },
  { label: 'Last 24 hours', from: 'now-24h', to: 'now' },
  { label: 'Last 7 days', from: 'now-7d', to: 'now' },
]

export const DEFAULT_RANGE = PRESETS[1]

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 }

/** An API time value -> epoch milliseconds (relative values against ``now``). */
export function toMillis(value: string, now: number = Date.now()): number {
  const text = value.trim().toLowerCase()
  if (text === 'now') return now
  const relative = /^(?:now)?-(\d+(?:\.\d+)?)([smhdw])$/.exec(text)
  if (relative) return now - Number(relative[1]) * UNITS[relative[2]] * 1000
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text) * (Number(text) > 1e11 ? 1 : 1000)
  const parsed = Date.parse(/z$|[+-]\d\d:?\d\d$/i.test(value) ? value : `${value}Z`)
  if (Number.isNaN(parsed)) throw new Error(`not a time: ${value}`)
  return parsed
}

/** Epoch milliseconds -> ISO 8601 UTC without milliseconds (what links and the API use). */
export function iso(ms: number): string {
  return new Date(Math.round(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z')
}

/** A short human label of a range (the date once when both ends share it). */
export function describeRange(from: string, to: string): string {
  const preset = PRESETS.find((p) => p.from === from && p.to === to)
  if (preset) return preset.label
  if (from.startsWith('now') || to.startsWith('now')) return `${from} → ${to}`
  const [a, b] = [iso(toMillis(from)), iso(toMillis(to))].map((v) => v.replace('T', ' ').replace(/:00Z$/, '').replace(/Z$/, ''))
  const sameDay = a.slice(0, 10) === b.slice(0, 10)
  return `${a} → ${sameDay ? b.slice(11) : b} UTC`
}

/** The shared range, read from and written to the current route's query. */
export function useTimeRange() {
  const route = useRoute()
  const router = useRouter()
  const from = computed(() => (route.query.from as string | undefined) ?? DEFAULT_RANGE.from)
  const to = computed(() => (route.query.to as string | undefined) ?? DEFAULT_RANGE.to)
  /** The range as absolute ISO instants (relative ones resolved now). */
  const absolute = computed(() => {
    const now = Date.now()
    return { from: iso(toMillis(from.value, now)), to: iso(toMillis(to.value, now)) }
  })
  const label = computed(() => describeRange(from.value, to.value))

  function setRange(newFrom: string, newTo: string): void {
    void router.replace({ query: { ...route.query, from: newFrom, to: newTo } })
  }

  return { from, to, absolute, label, setRange }
}
