// Load data for a page: re-run when the inputs change, cancel the stale request, keep the error in words.
import { ref, shallowRef, watch, type Ref, type WatchSource } from 'vue'

export interface Loaded<T> {
  data: Ref<T | null>
  error: Ref<unknown>
  loading: Ref<boolean>
  reload: () => Promise<void>
}

/** ``load(signal)`` now and whenever a ``sources`` value changes; the newest answer wins. */
export function useLoader<T>(load: (signal: AbortSignal) => Promise<T>, sources: WatchSource[] = []): Loaded<T> {
  const data = shallowRef<T | null>(null)
  const error = ref<unknown>(null)
  const loading = ref(false)
  let current: AbortController | null = null

  async function reload(): Promise<void> {
    current?.abort()
    const mine = new AbortController()
    current = mine
    loading.value = true
    try {
      const answer = await load(mine.signal)
      if (current !== mine) return
      data.value = answer
      error.value = null
    } catch (exc) {
      if (current !== mine || (exc instanceof DOMException && exc.name === 'AbortError')) return
      error.value = exc
    } finally {
      if (current === mine) loading.value = false
    }
  }

  watch(sources, () => void reload(), { immediate: true, deep: true })
  return { data, error, loading, reload }
}
