// Numbers as people read them on the fleet pages: bits per second, bytes, percent, durations.

function scaled(value: number, base: number, units: string[]): string {
  let v = value
  let i = 0
  while (Math.abs(v) >= base && i < units.length - 1) {
    v /= base
    i += 1
  }
  return `${v.toFixed(v >= 100 || i === 0 ? 0 : 1)} ${units[i]}`
}

export const bps = (v: number | null | undefined): string => scaled(v ?? 0, 1000, ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s'])
export const bytes = (v: number | null | undefined): string => scaled(v ?? 0, 1024, ['B', 'KiB', 'MiB', 'GiB', 'TiB'])
export const count = (v: number | null | undefined): string => scaled(v ?? 0, 1000, ['', 'k', 'M', 'G']).trim()
export const percent = (v: number | null | undefined): string => `${(v ?? 0).toFixed(1)} %`

/** Seconds -> "4 s", "3 min", "2 h 5 min", "3 d". */
export function ago(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) return 'never'
  const s = Math.max(0, seconds)
  if (s < 90) return `${s.toFixed(s < 10 ? 1 : 0)} s`
  if (s < 5400) return `${Math.round(s / 60)} min`
  if (s < 172800) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`
  return `${Math.round(s / 86400)} d`
}

/** Epoch seconds (or an ISO string) -> "2026-12-06 04:09:14 UTC". */
export function when(value: number | string | null | undefined): string {
  if (value === null || value === undefined || value === '') return '—'
  const d = typeof value === 'number' ? new Date(value * 1000) : new Date(value)
  if (Number.isNaN(d.getTime())) return String(value)
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC').replace(/Z$/, ' UTC')
}
