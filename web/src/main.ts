import { createApp } from 'vue'
import App from './App.vue'
import { whenUnauthorized } from './api/client'
import { router } from './router'
import { session } from './state/session'
import './style.css'

whenUnauthorized(() => {
  session.me = null
  const current = router.currentRoute.value
  if (!current.meta.public) void router.push({ path: '/login', query: { next: current.fullPath, expired: '1' } })
})

createApp(App).use(router).mount('#app')
