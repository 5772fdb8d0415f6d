// Numbers and times as the incident workflow shows them (binary units for bytes, UTC times).

export function bytes(value: number | null | undefined): string {
  if (value === null || value === undefined || Number.isNaN(value)) return '–'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = Math.abs(value)
  let i = 0
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i += 1
  }
  const text = `${v.toFixed(i === 0 || v >= 100 ? 0 : 1)} ${units[i]}`
  return value < 0 ? `−${text}` : text
}

/** A signed change in bytes: +66 MiB / −880 KiB. */
export function signedBytes(value: number): string {
  return value >= 0 ? `+${bytes(value)}` : bytes(value)
}

export function count(value: number | null | undefined): string {
  if (value === null || value === undefined) return '–'
  return value.toLocaleString('en-US')
}

export function pct(value: number | null | undefined, digits = 0): string {
  if (value === null || value === undefined) return '–'
  return `${(value * 100).toFixed(digits)}%`
}

/** ISO -> "2026-11-20 02:00:00" (UTC). */
export function when(value: string | number): string {
  const d = typeof value === 'number' ? new Date(value) : new Date(value)
  if (Number.isNaN(d.getTime())) return String(value)
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, '').replace('Z', '')
}

/** ISO -> "02:00:00" (UTC time of day). */
export function clock(value: string): string {
  return when(value).slice(11)
}

/** "2026-11-20 01:55 → 02:10 UTC": a span, the date once when both ends share it. */
export function span(from: string, to: string): string {
  const a = when(from)
  const b = when(to)
  const trim = (s: string) => s.replace(/:00$/, '')
  return a.slice(0, 10) === b.slice(0, 10) ? `${trim(a)} → ${trim(b.slice(11))} UTC` : `${trim(a)} → ${trim(b)} UTC`
}

/** Seconds -> "15 min", "3 h", "45 s". */
export function duration(seconds: number): string {
  if (seconds % 3600 === 0 && seconds >= 3600) return `${seconds / 3600} h`
  if (seconds % 60 === 0 && seconds >= 60) return `${seconds / 60} min`
  if (seconds >= 3600) return `${(seconds / 3600).toFixed(1)} h`
  if (seconds >= 60) return `${(seconds / 60).toFixed(1)} min`
  return `${Math.round(seconds)} s`
}

/** "db-01 (10.10.1.46)", or the address alone when it has no name. */
export function named(name: string | null | undefined, ip: string | null | undefined): string {
  if (!ip) return name ?? '–'
  return name && name !== ip ? `${name} (${ip})` : ip
}

/** A series step for a span: buckets stay at most ``max`` (1s .. 1d). */
export function stepFor(spanMs: number, max = 400): string {
  const steps: [string, number][] = [
    ['1s', 1], ['5s', 5], ['10s', 10], ['30s', 30], ['1m', 60], ['5m', 300], ['10m', 600], ['30m', 1800],
    ['1h', 3600], ['6h', 21600], ['1d', 86400],
  ]
  for (const [label, s] of steps) if (spanMs / 1000 / s <= max) return label
  return '1d'
}
