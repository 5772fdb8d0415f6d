// Pages and the login guard. Hash history: every view is a link (the query holds time range and filters),
// and the server needs no fallback route for deep links.
import { createRouter, createWebHashHistory, type RouteRecordRaw } from 'vue-router'
import { loadMe, session, can } from './state/session'

export interface PageMeta {
  title: string
  /** the permission a page needs (hidden from the menu without it) */
  permission?: string
  menu?: boolean
  /** reachable without logging in */
  public?: boolean
}

declare module 'vue-router' {
  interface RouteMeta extends Partial<PageMeta> {}
}

const routes: RouteRecordRaw[] = [
  { path: '/', redirect: '/panorama' },
  { path: '/login', component: () => import('./pages/LoginPage.vue'), meta: { title: 'Log in', public: true } },
  { path: '/panorama', component: () => import('./pages/PanoramaPage.vue'),
    meta: { title: 'Panorama', permission: 'flows:read', menu: true } },
  { path: '/incident', component: () => import('./pages/IncidentPage.vue'),
    meta: { title: 'Incident', permission: 'flows:read', menu: true } },
  { path: '/findings', component: () => import('./pages/FindingsPage.vue'),
    meta: { title: 'Findings', permission: 'flows:read', menu: true } },
  { path: '/fleet', component: () => import('./pages/FleetPage.vue'),
    meta: { title: 'Fleet', permission: 'fleet:read', menu: true } },
  { path: '/fleet/:agent', component: () => import('./pages/AgentPage.vue'),
    meta: { title: 'Agent', permission: 'fleet:read' } },
  { path: '/inventory', component: () => import('./pages/InventoryPage.vue'),
    meta: { title: 'Inventory', permission: 'inventory:read', menu: true } },
  { path: '/policies', component: () => import('./pages/PoliciesPage.vue'),
    meta: { title: 'Policies & configs', permission: 'fleet:read', menu: true } },
  { path: '/diagnose', component: () => import('./pages/DiagnosePage.vue'),
    meta: { title: 'Why no data?', permission: 'fleet:read', menu: true } },
  { path: '/audit', component: () => import('./pages/AuditPage.vue'),
    meta: { title: 'Audit', permission: 'audit:read', menu: true } },
  { path: '/:rest(.*)*', component: () => import('./pages/NotFoundPage.vue'), meta: { title: 'Not found' } },
]

export const router = createRouter({ history: createWebHashHistory(), routes })

router.beforeEach(async (to) => {
  if (!session.checked) {
    try {
      await loadMe()
    } catch {
      session.checked = true // the server is unreachable: the login page says so
    }
  }
  if (to.meta.public) return true
  if (!session.me) return { path: '/login', query: { next: to.fullPath, ...(session.expired ? { expired: '1' } : {}) } }
  if (to.meta.permission && !can(to.meta.permission)) return { path: '/panorama' }
  return true
})

router.afterEach((to) => {
  document.title = to.meta.title ? `${to.meta.title} · cloudtap` : 'cloudtap'
})

export const menu = routes.filter((r) => r.meta?.menu)
