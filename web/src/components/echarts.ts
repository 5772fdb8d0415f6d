// ECharts, only the parts the console draws (keeps the bundle small).
import { BarChart, HeatmapChart, LineChart, ScatterChart } from 'echarts/charts'
import {
  BrushComponent,
  DataZoomComponent,
  GridComponent,
  LegendComponent,
  MarkAreaComponent,
  MarkLineComponent,
  TitleComponent,
  ToolboxComponent,
  TooltipComponent,
  VisualMapComponent,
} from 'echarts/components'
import * as echarts from 'echarts/core'
import { CanvasRenderer } from 'echarts/renderers'

echarts.use([
  LineChart, BarChart, HeatmapChart, ScatterChart, GridComponent, TooltipComponent, LegendComponent, TitleComponent,
  BrushComponent, ToolboxComponent, DataZoomComponent, MarkAreaComponent, MarkLineComponent, VisualMapComponent,
  CanvasRenderer,
])

export { echarts }
