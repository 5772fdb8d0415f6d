// The workflow's findings as a text a person can paste into a ticket (the CLI demo's conclusion, and more).
import { toMillis } from '../../state/timeRange'
import { bytes, clock, count, duration, named, span, when } from './format'
import { formatChange, formatValue, metricInfo } from './metrics'
import { BASELINES, type Incident } from './useIncident'

export interface Conclusion {
  text: string
  /** steps whose answer is not there yet */
  missing: string[]
}

/** "latency p99 (ms)" -> "latency p99". */
function plain(label: string): string {
  return label.replace(/ \(ms\)$/, '')
}

export function conclude(inc: Incident, link: string): Conclusion {
  const lines: string[] = []
  const missing: string[] = []
  const w = inc.window.value
  const cmp = inc.compare.data.value
  const e = inc.edge.value
  const change = inc.change.value
  const push = inc.push.value
  const bt = inc.backtest.data.value

  if (w) {
    const base = BASELINES.find((b) => b.key === inc.baseline.value)?.label ?? inc.baseline.value
    lines.push(`Incident window: ${span(w.from, w.to)} (${duration((toMillis(w.to) - toMillis(w.from)) / 1000)}), compared with ${base}`
      + (cmp ? ` (${span(cmp.baseline.from, cmp.baseline.to)}).` : '.'))
  } else missing.push('the incident window (step 1)')

  const client = e ? named(e.clientName, e.client) : ''
  const server = e ? `${named(e.serverName, e.server)}${e.port !== null ? `:${e.port}` : ''}` : ''
  if (cmp && cmp.edges.length) {
    const top = cmp.edges[0]
    const info = metricInfo(cmp.metric)
    const unit = info.unit
    const per = info.additive ? 'per' : 'in a'
    const rank = change ? [...cmp.edges].findIndex((c) => c === change) + 1 : 0
    lines.push(`Biggest change: ${named(top.source_name, top.source)} → ${named(top.target_name, top.target)}:${top.server_port} `
      + `(${top.status} edge, ${formatChange(top.abs_change, unit)}${unit === 'bytes' ? '' : ` ${plain(info.label)}`} against the baseline)`
      + (top.bursts?.length ? `, burst ${clock(top.bursts[0].start)} → ${clock(top.bursts[0].end)} UTC, peak ${formatValue(top.bursts[0].peak, unit)} ${per} ${duration(cmp.step_s)}${info.additive ? '' : ' bucket'}.` : '.'))
    if (e && rank !== 1) lines.push(`Followed edge: ${client} → ${server}${rank > 1 ? ` (ranked #${rank})` : ''}.`)
  } else if (w) missing.push('the comparison (step 2)')
  if (!e) missing.push('an edge to follow (step 2)')

  const d = inc.drill.data.value
  if (d && e) {
    const peer = d.by_peer[0]
    const parts = [`Drill-down of ${d.target}: ${bytes(d.total_bytes)} in the window`]
    if (peer) parts.push(`main peer ${peer.key} (${Math.round(peer.share * 100)}% of its bytes)`)
    if (push) parts.push(`one-way push ${named(push.client_name, push.client)} → ${named(push.server_name, push.server)}:${push.server_port}: `
      + `${bytes(push.bytes_forward)} forward, ${bytes(push.bytes_back)} back (ratio ${push.ratio.toFixed(0)})`)
    if (d.failed_total) parts.push(`${count(d.failed_total)} failed handshake${d.failed_total === 1 ? '' : 's'}`)
    const slow = d.slowest?.[0]
    if (slow) {
      parts.push(`slowest request ${slow.request_type} ${slow.resource.slice(0, 80)} (${count(slow.stats.requests)} requests, `
        + `p99 ${formatValue(slow.stats.latency_p99_ms, 'ms')}, max ${formatValue(slow.stats.latency_max_ms, 'ms')})`)
    }
    lines.push(`${parts.join('; ')}.`)
  } else if (e && w) missing.push('the drill-down (step 3)')

  const got = inc.downloaded.value
  const pre = inc.preview.value
  if (got) {
    lines.push(`Packets: ${got.vm} ${span(got.from, got.to)}${got.filter ? `, filter "${got.filter}"` : ''}: `
      + `${got.packets === null ? '?' : count(got.packets)} packets, ${bytes(got.bytes)} (${got.filename}).`)
  } else if (pre && !pre.over_cap) {
    lines.push(`Packets: ${inc.pcap.value.vm} ${span(pre.from, pre.to)}${pre.filter ? `, filter "${pre.filter}"` : ''}: `
      + `${count(pre.packets)} packets, ${bytes(pre.bytes)} pcapng (not downloaded).`)
  }

  if (bt) {
    const p = bt.period
    const c = bt.signature.condition
    const opText = { gt: '>', ge: '≥', lt: '<', le: '≤' }[c.op] ?? c.op
    const value = formatValue(c.threshold, metricInfo(c.metric).unit)
    const additive = metricInfo(c.metric).additive
    lines.push(`History: ${bt.count} occurrence${bt.count === 1 ? '' : 's'} of ${c.metric} ${opText} ${value} `
      + `${additive ? 'per' : 'in a'} ${bt.signature.step}${additive ? '' : ' bucket'} on this edge`
      + (bt.scanned ? ` from ${when(bt.scanned.from)} to ${when(bt.scanned.to)} UTC` : '')
      + (p ? `; ${p.text}; next expected ${when(p.next_expected)} UTC.` : '; no regular period.'))
  } else if (e) missing.push('the backtest (step 5)')

  if (e && change && cmp && !metricInfo(cmp.metric).additive) {
    // a latency or an error rate: the edge got slower (or failed more), not bigger
    const info = metricInfo(cmp.metric)
    const slow = d?.slowest?.[0]
    let sentence = `Conclusion: ${client} → ${server} ${change.value >= change.expected ? 'got worse' : 'got better'} in the incident window: `
      + `its ${plain(info.label)} went from ${formatValue(change.expected, info.unit)} to ${formatValue(change.value, info.unit)}`
    if (slow) sentence += `; its slowest request is ${slow.request_type} ${slow.resource.slice(0, 80)} (p99 ${formatValue(slow.stats.latency_p99_ms, 'ms')})`
    if (bt) sentence += bt.period ? `; it happens ${bt.period.text}` : `; it happened ${bt.count} time${bt.count === 1 ? '' : 's'} in the stored history`
    lines.push('', `${sentence}.`)
  } else if (e && (change || push || bt)) {
    const volume = push?.bytes_forward ?? change?.value ?? 0
    const periodic = bt?.period ? `it happens ${bt.period.text}` : bt ? `it happened ${bt.count} time${bt.count === 1 ? '' : 's'} in the stored history` : ''
    const what = push ? `pushing about ${bytes(volume)} one way to` : `sending about ${bytes(volume)} to`
    const backup = /backup|bkp|rsync/i.test(`${e.serverName ?? ''}`) || e.port === 873
    const kind = push && bt?.period
      ? `a scheduled bulk transfer (${backup ? 'a backup, ' : ''}by its peer, port and one-way shape)`
      : push ? 'a bulk one-way transfer' : bt?.period ? 'a recurring pattern' : ''
    let sentence = `Conclusion: the burst in the incident window is ${client} ${what} ${server}`
    if (periodic) sentence += `, and ${periodic}`
    if (kind) sentence += `: ${kind}`
    sentence += '.'
    if (push && bt?.period) sentence += ' Check whether it shares a path with the slow service; move it off-peak or rate-limit it.'
    lines.push('', sentence)
  }
  lines.push('', `Link: ${link}`)
  return { text: lines.join('\n'), missing }
}
