// Documents as the console shows and compares them (indented JSON, keys sorted, as the server's preview),
// and a line diff for when the server has no preview route (an older server).

/** ``doc`` with its keys sorted at every level. */
export function sortKeys(doc: unknown): unknown {
  if (Array.isArray(doc)) return doc.map(sortKeys)
  if (doc && typeof doc === 'object') {
    return Object.fromEntries(Object.keys(doc as object).sort().map((k) => [k, sortKeys((doc as Record<string, unknown>)[k])]))
  }
  return doc
}

export function pretty(doc: unknown): string {
  return doc === null || doc === undefined ? '' : `${JSON.stringify(sortKeys(doc), null, 2)}\n`
}

/** A unified-style diff (every line, ``+``/``-``/`` `` prefixed) of two texts; '' when equal. */
export function lineDiff(before: string, after: string, name: string): string {
  if (before === after) return ''
  const a = before ? before.replace(/\n$/, '').split('\n') : []
  const b = after ? after.replace(/\n$/, '').split('\n') : []
  const n = a.length
  const m = b.length
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0))
  for (let i = n - 1; i >= 0; i -= 1) {
    for (let j = m - 1; j >= 0; j -= 1) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1])
  }
  const out = [`--- ${name} (current)`, `+++ ${name} (proposed)`]
  let i = 0
  let j = 0
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      out.push(` ${a[i]}`)
      i += 1
      j += 1
    } else if (j < m && (i >= n || lcs[i][j + 1] >= lcs[i + 1][j])) {
      out.push(`+${b[j]}`)
      j += 1
    } else {
      out.push(`-${a[i]}`)
      i += 1
    }
  }
  return `${out.join('\n')}\n`
}

/** Parse the editor's JSON; the error names the line. */
export function parseJson(text: string): { value?: Record<string, unknown>; problem?: string } {
  try {
    const value = JSON.parse(text) as unknown
    if (!value || typeof value !== 'object' || Array.isArray(value)) return { problem: 'The document must be a JSON object ({ … }).' }
    return { value: value as Record<string, unknown> }
  } catch (exc) {
    return { problem: `Not valid JSON: ${(exc as Error).message}` }
  }
}
