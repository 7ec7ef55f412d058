package main

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

func TestRunWritesPNG(t *testing.T) {
	dir := t.TempDir()
	args := []string{"-out", dir, "-width", "640", "-height", "400",
		"../../bench/charts/testdata/group-500.json", "../../bench/charts/testdata/group-1000.json"}
	if code := run(args); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, name := range []string{"latency-cdf-group.png", "group-fanout.png"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		cfg, err := png.DecodeConfig(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if st.Size() == 0 || cfg.Width != 640 || cfg.Height != 400 {
			t.Fatalf("%s: %d bytes, %dx%d; want a 640x400 PNG", name, st.Size(), cfg.Width, cfg.Height)
		}
	}
	if code := run([]string{"-out", dir}); code != 2 {
		t.Fatalf("no files: exit %d, want 2", code)
	}
	if code := run([]string{"-out", dir, filepath.Join(dir, "missing.json")}); code != 1 {
		t.Fatalf("missing file: exit %d, want 1", code)
	}
}
