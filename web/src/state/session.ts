// Who is logged in: the /api/v1/auth/me answer, and what that user may do where.
import { reactive } from 'vue'
import { api, ApiError } from '../api/client'

export interface Me {
  name: string
  via: string
  roles: string[]
  bindings: { role: string; projects: string[] | null }[]
  /** permission -> '*' (every project) or the projects where it holds */
  permissions: Record<string, '*' | string[]>
}

export const session = reactive<{ me: Me | null; checked: boolean; expired: boolean }>({
  me: null,
  checked: false,
  /** the browser had a session the server no longer knows (expired, revoked, server reset) */
  expired: false,
})

/** Whether the browser holds a session's CSRF cookie (set with the session; without it, no session). */
function hasSessionCookie(): boolean {
  return document.cookie.split('; ').some((c) => c.startsWith('cloudtap_csrf='))
}

/** Ask the server who we are (null when not logged in; no request when there is no session at all). */
export async function loadMe(): Promise<Me | null> {
  if (!hasSessionCookie()) {
    session.me = null
    session.checked = true
    return null
  }
  try {
    session.me = await api<Me>('/api/v1/auth/me')
  } catch (exc) {
    if (!(exc instanceof ApiError) || exc.status !== 401) throw exc
    session.me = null
    session.expired = true
  }
  session.checked = true
  return session.me
}

export async function logIn(username: string, password: string): Promise<Me> {
  await api('/api/v1/auth/login', { method: 'POST', body: { username, password } })
  session.expired = false
  return (await loadMe()) as Me
}

export async function logOut(): Promise<void> {
  await api('/api/v1/auth/logout', { method: 'POST' })
  session.me = null
}

/** Whether the user holds ``permission`` (in at least one project). */
export function can(permission: string): boolean {
  return Boolean(session.me?.permissions[permission])
}

/** Whether ``permission`` holds in every project (not only some). */
export function canEverywhere(permission: string): boolean {
  return session.me?.permissions[permission] === '*'
}

/** The projects the user is limited to, or null when it sees all. */
export function visibleProjects(): string[] | null {
  const flows = session.me?.permissions['flows:read']
  return flows === undefined || flows === '*' ? null : flows
}
