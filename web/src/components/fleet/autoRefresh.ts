// Re-run a load every few seconds while the page is open and the user has not paused it.
import { onBeforeUnmount, onMounted, ref } from 'vue'

export function useAutoRefresh(reload: () => Promise<void> | void, everyMs = 10_000) {
  const paused = ref(false)
  const updated = ref<Date | null>(null)
  let timer: number | undefined

  async function tick(): Promise<void> {
    if (paused.value || document.hidden) return
    await reload()
    updated.value = new Date()
  }

  onMounted(() => {
    updated.value = new Date()
    timer = window.setInterval(() => void tick(), everyMs)
  })
  onBeforeUnmount(() => window.clearInterval(timer))

  return { paused, updated, everyMs, toggle: () => (paused.value = !paused.value) }
}
