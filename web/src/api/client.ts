// The one way the console talks to the server: the public API, with the user's session cookie.
// Errors become ApiError with words a person can act on; a 401 sends the user to the login page.

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    public detail: unknown = undefined,
  ) {
    super(message)
  }
}

type Query = Record<string, string | number | boolean | undefined | null | (string | number)[]>

export interface RequestOptions {
  method?: 'GET' | 'POST' | 'PUT' | 'DELETE'
  body?: unknown
  query?: Query
  signal?: AbortSignal
}

let onUnauthorized: (() => void) | null = null

/** Called on any 401 (an expired or revoked session): the app sends the user to the login page. */
export function whenUnauthorized(handler: () => void): void {
  onUnauthorized = handler
}

function cookie(name: string): string | undefined {
  const found = document.cookie.split('; ').find((c) => c.startsWith(`${name}=`))
  return found ? decodeURIComponent(found.slice(name.length + 1)) : undefined
}

export function url(path: string, query?: Query): string {
  const params = new URLSearchParams()
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value === undefined || value === null || value === '') continue
    if (Array.isArray(value)) value.forEach((v) => params.append(key, String(v)))
    else params.set(key, String(value))
  }
  const qs = params.toString()
  return qs ? `${path}?${qs}` : path
}

/** The server's error text: FastAPI's ``detail`` (a string, or a list of field errors). */
export function describeDetail(detail: unknown): string {
  if (typeof detail === 'string') return detail
  if (Array.isArray(detail)) {
    return detail
      .map((d: { loc?: unknown[]; msg?: string }) => {
        const field = (d.loc ?? []).filter((p) => p !== 'body' && p !== 'query').join('.')
        return field ? `${field}: ${d.msg ?? ''}` : d.msg ?? ''
      })
      .join('; ')
  }
  return ''
}

function words(status: number, text: string): string {
  if (status === 401) return 'Your session has expired or you are not logged in. Log in again.'
  if (status === 403) return `You do not have permission for this. ${text}`.trim()
  if (status === 404) return text || 'Not found.'
  if (status === 413) return `The request is too large. ${text}`.trim()
  if (status === 429) return 'The server is busy; try again in a moment.'
  if (status === 502 || status === 504) return `An agent or upstream service is unreachable. ${text}`.trim()
  if (status === 503) return `The server is not ready. ${text}`.trim()
  if (status >= 500) return `The server failed (${status}). ${text}`.trim()
  return text || `Request failed (${status}).`
}

/** Call the API; returns the decoded JSON (or the Response for non-JSON answers with ``raw``). */
export async function api<T = unknown>(path: string, options: RequestOptions = {}): Promise<T> {
  const response = await send(path, options)
  const type = response.headers.get('content-type') ?? ''
  return (type.includes('json') ? await response.json() : await response.text()) as T
}

/** Like ``api`` but returns the Response (downloads, sizes from headers). */
export async function send(path: string, options: RequestOptions = {}): Promise<Response> {
  const method = options.method ?? (options.body === undefined ? 'GET' : 'POST')
  const headers: Record<string, string> = { Accept: 'application/json' }
  if (options.body !== undefined) headers['Content-Type'] = 'application/json'
  if (method !== 'GET') {
    const csrf = cookie('cloudtap_csrf')
    if (csrf) headers['X-CSRF-Token'] = csrf
  }
  let response: Response
  try {
    response = await fetch(url(path, options.query), {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      credentials: 'same-origin',
      signal: options.signal,
    })
  } catch (exc) {
    if (exc instanceof DOMException && exc.name === 'AbortError') throw exc
    throw new ApiError(0, 'The cloudtap server is unreachable. Check the network or whether it is running.')
  }
  if (!response.ok) {
    let detail: unknown
    try {
      detail = (await response.json()).detail
    } catch {
      detail = undefined
    }
    if (response.status === 401 && onUnauthorized && !path.endsWith('/auth/login')) onUnauthorized()
    throw new ApiError(response.status, words(response.status, describeDetail(detail)), detail)
  }
  return response
}
