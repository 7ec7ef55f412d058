package main

import (
	"bytes"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testFlags() (*flag.FlagSet, *string, *time.Duration, *int, *string) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	addr := fs.String("addr", ":8888", "listen address")
	hb := fs.Duration("heartbeat-timeout", 120*time.Second, "heartbeat")
	n := fs.Int("js-replicas", 1, "replicas")
	groups := fs.String("default-groups", "", "groups")
	fs.String("api-key", "", "key")
	fs.String("config", "", "config file")
	return fs, addr, hb, n, groups
}

func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "jim.yaml")
	os.WriteFile(file, []byte("addr: \":1\"\nheartbeat-timeout: 30s\njs-replicas: 3\ndefault-groups: [a, b]\n"), 0o644)

	fs, addr, hb, n, groups := testFlags()
	fs.Parse(nil)
	if err := loadConfig(fs, file, nil); err != nil {
		t.Fatal(err)
	}
	if *addr != ":1" || *hb != 30*time.Second || *n != 3 || *groups != "a,b" {
		t.Fatalf("file: %q %v %d %q", *addr, *hb, *n, *groups)
	}

	fs, addr, hb, n, _ = testFlags()
	fs.Parse(nil)
	env := []string{"JIM_HEARTBEAT_TIMEOUT=45s", "JIM_ADDR=:2", "JIM_SOAK=1", "OTHER=x"}
	if err := loadConfig(fs, file, env); err != nil {
		t.Fatal(err)
	}
	if *addr != ":2" || *hb != 45*time.Second || *n != 3 {
		t.Fatalf("env over file: %q %v %d", *addr, *hb, *n)
	}

	fs, addr, hb, _, _ = testFlags()
	fs.Parse([]string{"-heartbeat-timeout", "7s"})
	if err := loadConfig(fs, file, env); err != nil {
		t.Fatal(err)
	}
	if *addr != ":2" || *hb != 7*time.Second {
		t.Fatalf("flag over env: %q %v", *addr, *hb)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unknown":  "adr: \":1\"\n",
		"badvalue": "heartbeat-timeout: soon\n",
		"section":  "addr:\n  host: x\n",
		"syntax":   "addr: [\n",
	} {
		file := filepath.Join(dir, name+".yaml")
		os.WriteFile(file, []byte(body), 0o644)
		fs, _, _, _, _ := testFlags()
		fs.Parse(nil)
		err := loadConfig(fs, file, nil)
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line", name, err)
		}
	}
	fs, _, _, _, _ := testFlags()
	fs.Parse(nil)
	if err := loadConfig(fs, "", []string{"JIM_JS_REPLICAS=three"}); err == nil || !strings.Contains(err.Error(), "JIM_JS_REPLICAS") {
		t.Errorf("bad env value: %v", err)
	}
	if err := loadConfig(fs, filepath.Join(dir, "missing.yaml"), nil); err == nil {
		t.Error("missing config file accepted")
	}
}

func TestPrintConfig(t *testing.T) {
	fs, _, _, _, _ := testFlags()
	fs.Parse([]string{"-api-key", "s3cret", "-js-replicas", "3"})
	var b bytes.Buffer
	printConfig(&b, fs)
	out := b.String()
	for _, want := range []string{"addr: \":8888\"\n", "heartbeat-timeout: \"2m0s\"\n", "js-replicas: 3\n", "api-key: \"<redacted>\"\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("print-config lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "s3cret") || strings.Contains(out, "\nconfig:") {
		t.Errorf("print-config shows a secret or a meta flag:\n%s", out)
	}
	// What it prints loads back.
	file := filepath.Join(t.TempDir(), "p.yaml")
	os.WriteFile(file, []byte(strings.ReplaceAll(out, "\"<redacted>\"", "\"\"")), 0o644)
	fs2, _, _, n, _ := testFlags()
	fs2.Parse(nil)
	if err := loadConfig(fs2, file, nil); err != nil || *n != 3 {
		t.Fatalf("reloading printed config: %v, replicas %d", err, *n)
	}
}

// The admin listener answers loopback clients, or with an API key set,
// requests that carry it, from anywhere.
func TestAdminAllowed(t *testing.T) {
	req := func(remote, key string) *http.Request {
		r := httptest.NewRequest("GET", "/backup", nil)
		r.RemoteAddr = remote
		if key != "" {
			r.Header.Set("X-API-Key", key)
		}
		return r
	}
	for _, c := range []struct {
		remote, key, apiKey string
		want                bool
	}{
		{"127.0.0.1:5000", "", "", true},
		{"[::1]:5000", "", "", true},
		{"10.0.0.2:5000", "", "", false},
		{"10.0.0.2:5000", "k", "k", true},
		{"127.0.0.1:5000", "", "k", false},
		{"127.0.0.1:5000", "x", "k", false},
	} {
		if got := adminAllowed(req(c.remote, c.key), c.apiKey); got != c.want {
			t.Errorf("from %s with key %q (api key %q): %v, want %v", c.remote, c.key, c.apiKey, got, c.want)
		}
	}
}

func TestLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8888": true, "[::1]:8888": true, "localhost:8888": true, "127.0.0.9:1": true,
		":8888": false, "0.0.0.0:8888": false, "[::]:8888": false, "10.0.0.1:8888": false, "example.com:8888": false, "bad": false,
	} {
		if got := loopbackAddr(addr); got != want {
			t.Errorf("loopbackAddr(%q) = %v", addr, got)
		}
	}
}
