package charts

import (
	"bytes"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"jim/bench"
)

func loadFixtures(t *testing.T) []Run {
	t.Helper()
	paths, err := filepath.Glob("testdata/*.json")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	runs, err := Load(paths...)
	if err != nil {
		t.Fatal(err)
	}
	return runs
}

// checkPNG decodes b and checks its size and that something was drawn.
func checkPNG(t *testing.T, name string, b []byte, w, h int) {
	t.Helper()
	if len(b) == 0 {
		t.Fatalf("%s: empty file", name)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: not a PNG: %v", name, err)
	}
	if got := img.Bounds().Size(); got != (image.Point{X: w, Y: h}) {
		t.Fatalf("%s: size %v, want %dx%d", name, got, w, h)
	}
	// Axes, text and lines: well over 1% of the pixels are not white.
	ink := 0
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if r, g, b, _ := img.At(x, y).RGBA(); r < 0xf000 || g < 0xf000 || b < 0xf000 {
				ink++
			}
		}
	}
	if ink < w*h/100 {
		t.Fatalf("%s: only %d of %d pixels drawn", name, ink, w*h)
	}
}

func TestWriteAllFromFixtures(t *testing.T) {
	runs := loadFixtures(t)
	dir := t.TempDir()
	o := Options{Width: 800, Height: 500, Subtitle: "fixture"}
	paths, err := WriteAll(runs, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range paths {
		names = append(names, filepath.Base(p))
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		checkPNG(t, p, b, o.Width, o.Height)
	}
	want := []string{"latency-cdf-chat.png", "latency-cdf-group.png", "group-fanout.png", "chat-rate.png", "idle-memory.png"}
	if !slices.Equal(names, want) {
		t.Fatalf("wrote %v, want %v", names, want)
	}
}

func TestDefaultSize(t *testing.T) {
	runs := loadFixtures(t)
	var idle []Run
	for _, r := range runs {
		if r.Scenario == bench.ScenarioIdle {
			idle = append(idle, r)
		}
	}
	cs := Build(idle)
	if len(cs) != 1 || cs[0].Name != "idle-memory.png" {
		t.Fatalf("idle runs built %d charts", len(cs))
	}
	b, err := cs[0].PNG(Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkPNG(t, cs[0].Name, b, 1000, 640)
}

func TestCDFPoints(t *testing.T) {
	h := &bench.LatencyHist{Count: 4, MinNs: 500_000, MaxNs: 9_000_000,
		Buckets: [][2]int64{{1_000_000, 1}, {2_000_000, 2}, {9_000_000, 1}}}
	pts := cdfPoints(h)
	want := []struct{ x, y float64 }{{0.5, 0}, {1, 0.25}, {2, 0.75}, {9, 1}}
	if len(pts) != len(want) {
		t.Fatalf("%d points, want %d", len(pts), len(want))
	}
	for i, w := range want {
		if pts[i].X != w.x || pts[i].Y != w.y {
			t.Errorf("point %d = (%g, %g), want (%g, %g)", i, pts[i].X, pts[i].Y, w.x, w.y)
		}
	}
}

func TestLoadRejectsOtherJSON(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.json")
	if err := os.WriteFile(p, []byte(`{"hello":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil {
		t.Fatal("a file without a scenario should be refused")
	}
	if _, err := WriteAll(nil, t.TempDir(), Options{}); err == nil {
		t.Fatal("no runs should be an error")
	}
}
