// Dark or light, as the system says; charts redraw when it changes.
import { ref } from 'vue'

const query = window.matchMedia('(prefers-color-scheme: dark)')
export const dark = ref(query.matches)
query.addEventListener('change', (e) => (dark.value = e.matches))

/** A CSS variable's current value (charts take colours from the stylesheet). */
export function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim()
}
