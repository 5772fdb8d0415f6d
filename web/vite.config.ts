// Builds the console into the Python package (src/cloudtap/server/console/dist), where the server serves it.
// Swagger UI's assets are copied beside it so /docs works offline.
import { copyFileSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import vue from '@vitejs/plugin-vue'
import { defineConfig, type Plugin } from 'vite'

const here = dirname(fileURLToPath(import.meta.url))
const outDir = resolve(here, '../src/cloudtap/server/console/dist')

function swaggerAssets(): Plugin {
  const files = ['swagger-ui-bundle.js', 'swagger-ui.css', 'favicon-32x32.png']
  return {
    name: 'cloudtap-swagger-assets',
    apply: 'build',
    closeBundle() {
      const source = resolve(here, 'node_modules/swagger-ui-dist')
      mkdirSync(resolve(outDir, 'swagger'), { recursive: true })
      for (const file of files) copyFileSync(resolve(source, file), resolve(outDir, 'swagger', file))
    },
  }
}

/** ``file.gz`` beside every text asset: the server sends it to browsers that accept gzip (no CPU per request). */
function precompress(): Plugin {
  const walk = (dir: string): string[] =>
    readdirSync(dir).flatMap((name) => {
      const path = resolve(dir, name)
      return statSync(path).isDirectory() ? walk(path) : [path]
    })
  return {
    name: 'cloudtap-precompress',
    apply: 'build',
    enforce: 'post',
    closeBundle() {
      for (const path of walk(outDir)) {
        if (!/\.(js|css|html|svg|json)$/.test(path) || statSync(path).size < 1024) continue
        writeFileSync(`${path}.gz`, gzipSync(readFileSync(path), { level: 9 }))
      }
    },
  }
}

export default defineConfig({
  base: '/',
  plugins: [vue(), swaggerAssets(), precompress()],
  build: {
    outDir,
    emptyOutDir: true,
    chunkSizeWarningLimit: 1500,
  },
  server: {
    proxy: { '/api': { target: process.env.CLOUDTAP_URL ?? 'http://127.0.0.1:8470', secure: false } },
  },
})
