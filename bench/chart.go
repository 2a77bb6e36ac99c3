package main

import (
	"image/color"
	"math"
	"os"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var chartColors = map[string]color.Color{
	colChannels:  color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	colWatermill: color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	colNode:      color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

// Chart draws one panel per case (the latency panel shows p50): for each
// adapter, channels, Watermill and moleculer-channels relative to the raw
// driver (the dashed line at 1; higher is better).
func (r *Report) Chart(path string) error {
	type panel struct {
		ci int
		m  metric
	}
	var panels []panel
	for ci, c := range r.Cases {
		ms := metrics(c)
		if c.Test == Latency {
			panels = append(panels, panel{ci, ms[1]}) // p50
		} else {
			panels = append(panels, panel{ci, ms[0]})
		}
	}
	var cols []string
	for _, col := range []string{colChannels, colWatermill, colNode} {
		if slices.Contains(r.Columns, col) {
			cols = append(cols, col)
		}
	}
	const perRow = 2
	rows := (len(panels) + perRow - 1) / perRow
	grid := make([][]*plot.Plot, rows)
	for i := range grid {
		grid[i] = make([]*plot.Plot, perRow)
	}
	barWidth := vg.Points(float64(110) / float64(max(1, len(cols))) / float64(max(1, len(r.Adapters))) * 4)
	barWidth = min(barWidth, vg.Points(14))
	for k, pn := range panels {
		p := plot.New()
		p.Title.Text = pn.m.label
		if pn.m.unit == "ms" {
			p.Title.Text = "latency p50, one way (raw time / time)"
		}
		p.Y.Label.Text = "relative to raw"
		p.Y.Min = 0
		top := 1.2
		for j, col := range cols {
			vals := make(plotter.Values, len(r.Adapters))
			for i, a := range r.Adapters {
				v := r.relative(a, pn.ci, col, pn.m)
				if math.IsNaN(v) {
					v = 0
				}
				vals[i] = v
				top = max(top, v*1.3) // room for the legend
			}
			bc, err := plotter.NewBarChart(vals, barWidth)
			if err != nil {
				return err
			}
			bc.Color = chartColors[col]
			bc.LineStyle.Width = 0
			bc.Offset = vg.Length(float64(j)-float64(len(cols)-1)/2) * barWidth
			p.Add(bc)
			p.Legend.Add(columnTitles[col], bc)
		}
		p.Y.Max = top
		one, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: 1}, {X: float64(len(r.Adapters)) - 0.5, Y: 1}})
		if err != nil {
			return err
		}
		one.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		one.Color = color.Gray{Y: 0x60}
		p.Add(one)
		p.Legend.Add("raw", one)
		p.Legend.Top = true
		p.Legend.Left = false
		p.Legend.TextStyle.Font.Size = vg.Points(8)
		p.NominalX(r.Adapters...)
		g := plotter.NewGrid()
		g.Vertical.Color = nil // no line through the bars
		p.Add(g)
		grid[k/perRow][k%perRow] = p
	}
	for k := len(panels); k < rows*perRow; k++ {
		grid[k/perRow][k%perRow] = plot.New() // an empty tile
		grid[k/perRow][k%perRow].HideAxes()
	}
	const w, hPer = 26 * vg.Centimeter, 8 * vg.Centimeter
	img := vgimg.NewWith(vgimg.UseWH(w, vg.Length(rows)*hPer), vgimg.UseDPI(110))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: rows, Cols: perRow, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(grid, tiles, dc)
	for i := range grid {
		for j := range grid[i] {
			grid[i][j].Draw(canvases[i][j])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
