// Package deploy checks the files under deploy/: no Docker engine or
// Kubernetes runs here, so they are checked for syntax and for the settings
// the documentation promises.
package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"jim/internal/jimtest"
	"jim/internal/jimtest/natstest"
)

const dir = "../../deploy"

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestComposeFile(t *testing.T) {
	var c struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(read(t, "docker-compose.yml"), &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for _, s := range []string{"nats", "jimd-1", "jimd-2", "jimd-3", "haproxy"} {
		if _, ok := c.Services[s]; !ok {
			t.Errorf("service %s missing", s)
		}
	}
	for _, s := range []string{"jimd-1", "jimd-2", "jimd-3"} {
		env := c.Services[s].Environment
		if env["JIM_NATS"] == "" || env["JIM_STORE"] != "jetstream" || env["JIM_NODE_ID"] != s {
			t.Errorf("%s environment %v", s, env)
		}
	}
	conf := string(read(t, "nats.conf"))
	if !strings.Contains(conf, "sync_interval: always") || !strings.Contains(conf, "store_dir:") {
		t.Error("nats.conf must set jetstream store_dir and sync_interval: always")
	}
	if !strings.Contains(string(read(t, "haproxy.cfg")), "mode tcp") {
		t.Error("haproxy.cfg is not in TCP mode")
	}
}

func TestKubernetesManifests(t *testing.T) {
	kinds := map[string]bool{}
	d := yaml.NewDecoder(bytes.NewReader(read(t, "k8s/jimd.yaml")))
	for {
		var doc struct {
			Kind string `yaml:"kind"`
		}
		err := d.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("k8s/jimd.yaml: %v", err)
		}
		kinds[doc.Kind] = true
	}
	for _, k := range []string{"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} {
		if !kinds[k] {
			t.Errorf("k8s/jimd.yaml has no %s", k)
		}
	}
	var v map[string]any
	vals := read(t, "k8s/nats-values.yaml")
	if err := yaml.Unmarshal(vals, &v); err != nil {
		t.Fatalf("k8s/nats-values.yaml: %v", err)
	}
	if !strings.Contains(string(vals), "sync_interval: always") {
		t.Error("NATS chart values must set sync_interval: always")
	}
}

func TestSystemdUnit(t *testing.T) {
	unit := string(read(t, "jimd.service"))
	for _, want := range []string{
		"LimitNOFILE=1048576",
		"ExecStartPre=/usr/local/bin/jimd -check-config",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"ExecStart=/usr/local/bin/jimd",
		"[Install]",
	} {
		if !strings.Contains(unit, "\n"+want) {
			t.Errorf("jimd.service lacks %q", want)
		}
	}
}

func TestDockerfile(t *testing.T) {
	df := string(read(t, "Dockerfile"))
	for _, want := range []string{"CGO_ENABLED=0", "USER ", "HEALTHCHECK", "/healthz", "AS build"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

// Every setting in sysctl.conf has a comment line right above it.
func TestSysctl(t *testing.T) {
	sc := bufio.NewScanner(bytes.NewReader(read(t, "sysctl.conf")))
	prev := ""
	n := 0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			n++
			if !strings.HasPrefix(prev, "#") {
				t.Errorf("sysctl.conf: %q has no comment line", line)
			}
			if !strings.Contains(line, "=") {
				t.Errorf("sysctl.conf: %q is not key = value", line)
			}
		}
		prev = line
	}
	s := string(read(t, "sysctl.conf"))
	for _, k := range []string{"fs.file-max", "fs.nr_open", "net.core.somaxconn", "net.ipv4.ip_local_port_range",
		"net.ipv4.tcp_tw_reuse", "net.ipv4.tcp_mem", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.core.netdev_max_backlog"} {
		if !strings.Contains(s, k+" =") {
			t.Errorf("sysctl.conf lacks %s", k)
		}
	}
}

// The example config, and the one in the Kubernetes ConfigMap, pass
// jimd -check-config; a broken one does not.
func TestExampleConfigChecks(t *testing.T) {
	bin := jimtest.BuildJimd(t)
	check := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"-check-config"}, args...)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := check("-config", filepath.Join(dir, "jim.yaml")); err != nil {
		t.Fatalf("deploy/jim.yaml: %v: %s", err, out)
	}

	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	d := yaml.NewDecoder(bytes.NewReader(read(t, "k8s/jimd.yaml")))
	if err := d.Decode(&cm); err != nil {
		t.Fatal(err)
	}
	k8sCfg := filepath.Join(t.TempDir(), "jim.yaml")
	os.WriteFile(k8sCfg, []byte(cm.Data["jim.yaml"]), 0o644)
	if out, err := check("-config", k8sCfg); err != nil || !strings.Contains(out, "store jetstream") {
		t.Fatalf("k8s ConfigMap config: %v: %s", err, out)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("addr: \":1\"\nheartbeat-timout: 5s\n"), 0o644)
	out, err := check("-config", bad)
	if err == nil || strings.Count(out, "\n") != 0 || !strings.Contains(out, "heartbeat-timout") {
		t.Fatalf("misspelt option: err %v, output %q (want exit 1 and one line naming it)", err, out)
	}
}

// The alerting rules parse, each says how severe it is and what it means,
// and every jimd metric they use is one jimd exports: a single node on
// Badger and a cluster node on NATS are started and their /metrics read.
func TestPrometheusRules(t *testing.T) {
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(read(t, "prometheus-rules.yml"), &f); err != nil {
		t.Fatal(err)
	}
	bin := jimtest.BuildJimd(t)
	exported := map[string]bool{"up": true} // Prometheus's own
	for _, args := range [][]string{
		{"-data", t.TempDir()},
		{"-nats", natstest.Start(t, natstest.Options{}), "-store", "memory"},
	} {
		j := jimtest.StartJimd(t, bin, "metrics", append(args, "-log-level", "warn")...)
		resp, err := http.Get("http://" + j.Addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if name, ok := strings.CutPrefix(sc.Text(), "# TYPE "); ok {
				name, kind, _ := strings.Cut(name, " ")
				exported[name] = true
				if kind == "histogram" {
					for _, s := range []string{"_bucket", "_sum", "_count"} {
						exported[name+s] = true
					}
				}
			}
		}
		resp.Body.Close()
	}
	metric := regexp.MustCompile(`\b(jim_[a-z0-9_]+|process_[a-z0-9_]+|up)\b`)
	seen := map[string]bool{}
	rules := 0
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			rules++
			if r.Alert == "" || r.Expr == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("rule %+v: alert, expr, summary and description are required", r)
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q", r.Alert, s)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
				}
			}
			if seen[r.Alert] {
				t.Errorf("%s: twice", r.Alert)
			}
			seen[r.Alert] = true
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("%s: unbalanced parentheses in %s", r.Alert, r.Expr)
			}
			for _, m := range metric.FindAllString(r.Expr, -1) {
				if !exported[m] {
					t.Errorf("%s: jimd exports no %s", r.Alert, m)
				}
			}
		}
	}
	if rules < 10 {
		t.Fatalf("%d rules", rules)
	}
	// The metrics table of docs/deploy.md lists every jim_ series.
	doc, err := os.ReadFile("../../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	for name := range exported {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if strings.HasPrefix(name, "jim_") && !regexp.MustCompile("`"+base+"[{`]").Match(doc) {
			t.Errorf("docs/deploy.md does not list %s", base)
		}
	}
}
