// Package charts draws PNG charts from jimbench -json result files: latency
// CDFs from the runs' latency histograms, and throughput, latency and server
// memory against the size of a run (connections, group size, offered rate).
package charts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"jim/bench"
)

// Run is one jimbench result and the file it came from.
type Run struct {
	Path string
	*bench.Result
}

// Load reads jimbench -json files.
func Load(paths ...string) ([]Run, error) {
	var runs []Run
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var r bench.Result
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if r.Scenario == "" {
			return nil, fmt.Errorf("%s: not a jimbench result (no scenario)", p)
		}
		runs = append(runs, Run{Path: p, Result: &r})
	}
	return runs, nil
}

// Options set the size of the images and a line added under every title.
type Options struct {
	Width, Height int    // pixels; 0 means 1000 x 640
	DPI           int    // 0 means 96
	Subtitle      string // e.g. the store and the machine
}

func (o Options) size() (int, int, int) {
	w, h, dpi := o.Width, o.Height, o.DPI
	if w <= 0 {
		w = 1000
	}
	if h <= 0 {
		h = 640
	}
	if dpi <= 0 {
		dpi = 96
	}
	return w, h, dpi
}

// Chart is one image: a title over one or more panels stacked vertically.
type Chart struct {
	Name   string // file name, e.g. "latency-cdf-chat.png"
	Title  string
	Panels []*plot.Plot
}

// Build makes every chart the runs support:
//   - latency-cdf-SCENARIO.png for each scenario with latency histograms;
//   - group-fanout.png: deliveries/s and latency against group size;
//   - chat-rate.png: deliveries/s and latency against offered rate, when
//     chat ran at two or more rates;
//   - idle-memory.png: server RSS per connection and in all against the
//     number of connections.
func Build(runs []Run) []Chart {
	by := map[string][]Run{}
	for _, r := range runs {
		by[r.Scenario] = append(by[r.Scenario], r)
	}
	var out []Chart
	for _, sc := range []string{bench.ScenarioChat, bench.ScenarioGroup, bench.ScenarioPush} {
		if c, ok := latencyCDF(sc, by[sc]); ok {
			out = append(out, c)
		}
	}
	if rs := by[bench.ScenarioGroup]; len(rs) > 0 {
		out = append(out, Chart{
			Name:  "group-fanout.png",
			Title: fmt.Sprintf("Group fan-out: one sender per group at %s msg/s, every member online", rates(rs)),
			Panels: []*plot.Plot{
				throughputPanel(rs, groupSize, "group size (members, log scale)"),
				latencyPanel(rs, groupSize, "group size (members, log scale)"),
			},
		})
	}
	if rs := by[bench.ScenarioChat]; distinct(rs, offered) >= 2 {
		out = append(out, Chart{
			Name:  "chat-rate.png",
			Title: fmt.Sprintf("Private chat: %s connections in pairs, every message acked and delivered to the partner", conns(rs)),
			Panels: []*plot.Plot{
				throughputPanel(rs, offered, "offered rate (messages/s, log scale)"),
				latencyPanel(rs, offered, "offered rate (messages/s, log scale)"),
			},
		})
	}
	if rs := by[bench.ScenarioIdle]; len(rs) > 0 {
		out = append(out, Chart{
			Name:   "idle-memory.png",
			Title:  "Idle logged-in connections: server memory",
			Panels: idlePanels(rs),
		})
	}
	return out
}

// WriteAll builds the charts and writes them as PNGs into dir, returning
// the paths written.
func WriteAll(runs []Run, dir string, o Options) ([]string, error) {
	charts := Build(runs)
	if len(charts) == 0 {
		return nil, errors.New("nothing to chart: no idle, chat, group or push results")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for _, c := range charts {
		b, err := c.PNG(o)
		if err != nil {
			return paths, fmt.Errorf("%s: %w", c.Name, err)
		}
		p := filepath.Join(dir, c.Name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return paths, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// PNG renders the chart at the size o gives.
func (c Chart) PNG(o Options) (b []byte, err error) {
	w, h, dpi := o.size()
	// gonum/plot panics on data it cannot draw (a log axis over
	// non-positive values); report that as an error.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("draw: %v", p)
		}
	}()
	img := vgimg.NewWith(vgimg.UseImage(image.NewRGBA(image.Rect(0, 0, w, h))), vgimg.UseDPI(dpi))
	dc := draw.New(img)

	// Title block: the title and the subtitle, centred.
	title := c.Title
	if o.Subtitle != "" {
		title += "\n" + o.Subtitle
	}
	ts := plot.New().Title.TextStyle
	ts.Font.Size = vg.Points(14)
	ts.XAlign = draw.XCenter
	ts.YAlign = draw.YTop
	ts.Handler = plot.DefaultTextHandler
	th := ts.Height(title)
	pad := vg.Points(6)
	dc.FillText(ts, vg.Point{X: dc.Center().X, Y: dc.Max.Y - pad}, title)
	body := dc
	body.Max.Y -= th + 2*pad

	grid := make([][]*plot.Plot, len(c.Panels))
	for i, p := range c.Panels {
		grid[i] = []*plot.Plot{p}
	}
	tiles := draw.Tiles{Rows: len(c.Panels), Cols: 1, PadX: pad, PadY: 2 * pad,
		PadLeft: pad, PadRight: 2 * pad, PadBottom: pad}
	canvases := plot.Align(grid, tiles, body)
	for i, p := range c.Panels {
		p.Draw(canvases[i][0])
	}
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// latencyCDF draws one line per run: the fraction of deliveries that took
// at most x, from the run's histogram.
func latencyCDF(scenario string, rs []Run) (Chart, bool) {
	var withHist []Run
	for _, r := range rs {
		if h := r.LatencyHist; h != nil && h.Count > 0 && len(h.Buckets) > 0 {
			withHist = append(withHist, r)
		}
	}
	if len(withHist) == 0 {
		return Chart{}, false
	}
	sort.SliceStable(withHist, func(i, j int) bool { return cdfKey(withHist[i]) < cdfKey(withHist[j]) })
	p := newPlot()
	p.X.Label.Text = "latency from send to delivery (ms, log scale)"
	p.Y.Label.Text = "fraction of deliveries ≤ latency"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = logTicks{}
	p.Y.Min, p.Y.Max = 0, 1
	p.Y.Tick.Marker = plot.ConstantTicks{
		{Value: 0, Label: "0"}, {Value: 0.1}, {Value: 0.2}, {Value: 0.25, Label: "0.25"},
		{Value: 0.3}, {Value: 0.4}, {Value: 0.5, Label: "0.5"}, {Value: 0.6}, {Value: 0.7},
		{Value: 0.75, Label: "0.75"}, {Value: 0.8}, {Value: 0.9, Label: "0.9"}, {Value: 1, Label: "1"},
	}
	p.Legend.Top, p.Legend.Left = false, false
	for i, r := range withHist {
		l, err := plotter.NewLine(cdfPoints(r.LatencyHist))
		if err != nil {
			continue
		}
		style(&l.LineStyle, i)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s (p50 %s, p99 %s ms)", runLabel(r), ms(r.P50Ms), ms(r.P99Ms)), l)
	}
	r50, r99 := refLine(0.5), refLine(0.99)
	p.Add(r50, r99)
	p.Legend.Add("dashed: 0.5 and 0.99 (p50, p99)", r99)
	title := map[string]string{
		bench.ScenarioChat:  "Private chat latency CDF (send to partner's delivery)",
		bench.ScenarioGroup: "Group fan-out latency CDF (send to each member's delivery)",
		bench.ScenarioPush:  "HTTP push latency CDF (API call to delivery)",
	}[scenario]
	return Chart{Name: "latency-cdf-" + scenario + ".png", Title: title, Panels: []*plot.Plot{p}}, true
}

// cdfKey orders CDF lines by the size of the run, then its rate.
func cdfKey(r Run) float64 {
	return float64(max(r.ConnsEstablished, 1))*1e9 + float64(r.GroupSize)*1e3 + r.Rate
}

// cdfPoints turns a histogram into (latency ms, cumulative fraction)
// points, starting at (minimum, 0).
func cdfPoints(h *bench.LatencyHist) plotter.XYs {
	const floor = 1e-3 // ms: a log axis cannot show zero
	pts := plotter.XYs{{X: math.Max(float64(h.MinNs)/1e6, floor), Y: 0}}
	var sum int64
	for _, b := range h.Buckets {
		sum += b[1]
		pts = append(pts, plotter.XY{X: math.Max(float64(b[0])/1e6, floor), Y: float64(sum) / float64(h.Count)})
	}
	return pts
}

// refLine is a faint dashed horizontal line at fraction q.
func refLine(q float64) *plotter.Function {
	f := plotter.NewFunction(func(float64) float64 { return q })
	f.Color = color.Gray{Y: 150}
	f.Width = vg.Points(0.8)
	f.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	return f
}

// xFunc picks the x value of a run in a scaling chart.
type xFunc func(Run) float64

func groupSize(r Run) float64   { return float64(r.GroupSize) }
func offered(r Run) float64     { return r.Rate }
func connsOf(r Run) float64     { return float64(r.ConnsEstablished) }
func connsWanted(r Run) float64 { return float64(r.ConnsTarget) }

// series splits runs by protocol, each sorted by x.
func series(rs []Run, x xFunc) (names []string, out map[string][]Run) {
	out = map[string][]Run{}
	for _, r := range rs {
		k := strings.ToUpper(r.Proto)
		if _, ok := out[k]; !ok {
			names = append(names, k)
		}
		out[k] = append(out[k], r)
	}
	sort.Strings(names)
	for _, k := range names {
		sort.SliceStable(out[k], func(i, j int) bool { return x(out[k][i]) < x(out[k][j]) })
	}
	return names, out
}

func throughputPanel(rs []Run, x xFunc, xLabel string) *plot.Plot {
	p := newPlot()
	p.X.Label.Text = xLabel
	p.Y.Label.Text = "deliveries per second"
	logX(p, rs, x)
	p.Y.Tick.Marker = siTicks{}
	p.Y.Min = 0
	names, by := series(rs, x)
	i := 0
	for _, n := range names {
		var got, want plotter.XYs
		for _, r := range by[n] {
			got = append(got, plotter.XY{X: x(r), Y: r.DeliveriesPerSec})
			if r.DurationSeconds > 0 {
				want = append(want, plotter.XY{X: x(r), Y: float64(r.ExpectedDelivered) / r.DurationSeconds})
			}
		}
		addLinePoints(p, got, i, n+" delivered")
		if len(want) > 0 {
			l, _ := plotter.NewLine(want)
			style(&l.LineStyle, i)
			l.Color = color.Gray{Y: 90}
			l.Width = vg.Points(1.2)
			l.Dashes = []vg.Length{vg.Points(5), vg.Points(4)}
			p.Add(l)
			p.Legend.Add(n+" expected (messages sent × receivers online)", l)
		}
		i++
	}
	headroom(p, false)
	return p
}

// headroom raises the top of the y axis so that the legend in the top left
// corner does not cover the data.
func headroom(p *plot.Plot, logY bool) {
	ymax := p.Y.Max // Add has stretched it over the data
	if math.IsInf(ymax, 0) || ymax <= 0 {
		return
	}
	if logY {
		p.Y.Max = ymax * 6
		if p.Y.Min > 0 {
			p.Y.Min /= 1.5
		}
		return
	}
	p.Y.Max = ymax * 1.45
}

func latencyPanel(rs []Run, x xFunc, xLabel string) *plot.Plot {
	p := newPlot()
	p.X.Label.Text = xLabel
	p.Y.Label.Text = "latency (ms, log scale)"
	logX(p, rs, x)
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = logTicks{}
	names, by := series(rs, x)
	i := 0
	for _, n := range names {
		for j, q := range []struct {
			name string
			v    func(Run) float64
		}{{"p50", func(r Run) float64 { return r.P50Ms }}, {"p99", func(r Run) float64 { return r.P99Ms }}} {
			var pts plotter.XYs
			for _, r := range by[n] {
				pts = append(pts, plotter.XY{X: x(r), Y: math.Max(q.v(r), 1e-3)})
			}
			addLinePoints(p, pts, i*2+j, n+" "+q.name)
		}
		i++
	}
	headroom(p, true)
	return p
}

func idlePanels(rs []Run) []*plot.Plot {
	const xl = "logged-in idle connections"
	per := newPlot()
	per.X.Label.Text = xl
	per.Y.Label.Text = "server RSS growth per connection (bytes)"
	per.Y.Min = 0
	tot := newPlot()
	tot.X.Label.Text = xl
	tot.Y.Label.Text = "server RSS (MiB)"
	tot.Y.Min = 0
	names, by := series(rs, connsOf)
	for i, n := range names {
		var pc, end, before plotter.XYs
		for _, r := range by[n] {
			if r.ServerRSSBytes == 0 {
				continue // run without -server-pid
			}
			pc = append(pc, plotter.XY{X: connsOf(r), Y: r.ServerRSSPerConnBytes})
			end = append(end, plotter.XY{X: connsOf(r), Y: float64(r.ServerRSSBytes) / (1 << 20)})
			before = append(before, plotter.XY{X: connsOf(r), Y: float64(r.ServerRSSBeforeBytes) / (1 << 20)})
		}
		addLinePoints(per, pc, i, n)
		addLinePoints(tot, end, 2*i, n+" with the connections open")
		addLinePoints(tot, before, 2*i+1, n+" before connecting")
	}
	ticks, _, hi := valueTicks(rs, connsOf)
	for _, p := range []*plot.Plot{per, tot} {
		p.X.Tick.Marker = ticks
		p.X.Min, p.X.Max = 0, hi*1.04
	}
	per.Y.Tick.Marker = siTicks{}
	tot.Y.Tick.Marker = siTicks{}
	headroom(per, false)
	headroom(tot, false)
	return []*plot.Plot{per, tot}
}

func newPlot() *plot.Plot {
	p := plot.New()
	p.Add(plotter.NewGrid())
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.Padding = vg.Points(4)
	p.Legend.TextStyle.Font.Size = vg.Points(11)
	p.X.Label.TextStyle.Font.Size = vg.Points(11)
	p.Y.Label.TextStyle.Font.Size = vg.Points(11)
	return p
}

// logX puts x on a log scale, ticked at the values the runs have, when they
// are all positive and span at least a factor of 3; else linear.
func logX(p *plot.Plot, rs []Run, x xFunc) {
	ticks, lo, hi := valueTicks(rs, x)
	p.X.Tick.Marker = ticks
	if lo > 0 && hi >= 3*lo {
		p.X.Scale = plot.LogScale{}
		p.X.Min, p.X.Max = lo/1.15, hi*1.15
		return
	}
	p.X.Min = math.Min(0, lo)
	p.X.Max = hi * 1.04
	p.X.Label.Text = strings.Replace(p.X.Label.Text, ", log scale", "", 1)
}

// valueTicks marks the x values the runs have, and returns their range.
func valueTicks(rs []Run, x xFunc) (ticks plot.ConstantTicks, lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	seen := map[float64]bool{}
	for _, r := range rs {
		v := x(r)
		lo, hi = math.Min(lo, v), math.Max(hi, v)
		if !seen[v] {
			seen[v] = true
			ticks = append(ticks, plot.Tick{Value: v, Label: si(v)})
		}
	}
	return ticks, lo, hi
}

func addLinePoints(p *plot.Plot, pts plotter.XYs, i int, label string) {
	if len(pts) == 0 {
		return
	}
	l, s, err := plotter.NewLinePoints(pts)
	if err != nil {
		return
	}
	style(&l.LineStyle, i)
	s.Color = l.Color
	s.Shape = plotutil.Shape(i)
	s.Radius = vg.Points(3.5)
	p.Add(l, s)
	p.Legend.Add(label, l, s)
}

func style(ls *draw.LineStyle, i int) {
	ls.Color = palette[i%len(palette)]
	ls.Width = vg.Points(1.8)
}

// palette is the Okabe-Ito set: distinct for most colour-blind readers.
var palette = []color.Color{
	color.RGBA{0, 114, 178, 255},   // blue
	color.RGBA{213, 94, 0, 255},    // vermillion
	color.RGBA{0, 158, 115, 255},   // green
	color.RGBA{204, 121, 167, 255}, // purple
	color.RGBA{230, 159, 0, 255},   // orange
	color.RGBA{86, 180, 233, 255},  // sky blue
	color.RGBA{0, 0, 0, 255},       // black
}

// logTicks marks every 1..9 × 10^k on a log axis and labels 1, 2 and 5 ×
// 10^k, or only the powers of ten when the axis spans more than three.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	if lo <= 0 || hi <= lo {
		return nil
	}
	k0, k1 := int(math.Floor(math.Log10(lo))), int(math.Ceil(math.Log10(hi)))
	wide := k1-k0 > 3
	var ts []plot.Tick
	for k := k0; k <= k1; k++ {
		for m := 1; m <= 9; m++ {
			v := float64(m) * math.Pow10(k)
			if v < lo*0.999 || v > hi*1.001 {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || (!wide && (m == 2 || m == 5)) {
				t.Label = strconv.FormatFloat(v, 'g', -1, 64)
			}
			ts = append(ts, t)
		}
	}
	return ts
}

// siTicks are the default ticks labelled 2k, 1.5M and so on.
type siTicks struct{}

func (siTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = si(ts[i].Value)
		}
	}
	return ts
}

// si formats v with a k or M suffix.
func si(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e6:
		return trim(v/1e6) + "M"
	case a >= 1e3:
		return trim(v/1e3) + "k"
	}
	return trim(v)
}

func trim(v float64) string { return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64) }

// ms formats a latency in milliseconds with about three significant digits.
func ms(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(math.Round(v), 'f', -1, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func runLabel(r Run) string {
	proto := strings.ToUpper(r.Proto)
	switch r.Scenario {
	case bench.ScenarioGroup:
		return fmt.Sprintf("%s, group of %s, %s msg/s", proto, si(float64(r.GroupSize)), si(r.Rate))
	default:
		return fmt.Sprintf("%s, %s conns, %s msg/s", proto, si(float64(r.ConnsTarget)), si(r.Rate))
	}
}

func distinct(rs []Run, x xFunc) int {
	seen := map[float64]bool{}
	for _, r := range rs {
		seen[x(r)] = true
	}
	return len(seen)
}

// rates lists the distinct offered rates, e.g. "10" or "10/100".
func rates(rs []Run) string { return joinDistinct(rs, offered) }

func conns(rs []Run) string { return joinDistinct(rs, connsWanted) }

func joinDistinct(rs []Run, x xFunc) string {
	seen := map[float64]bool{}
	var vs []float64
	for _, r := range rs {
		if v := x(r); !seen[v] {
			seen[v] = true
			vs = append(vs, v)
		}
	}
	sort.Float64s(vs)
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = si(v)
	}
	return strings.Join(s, "/")
}
