package gateway_test

import (
	"net/http"
	"testing"
	"testing/fstest"

	"jim/dispatch"
	"jim/gateway"
)

// The chat page comes with a policy that keeps it to its own origin and out
// of other sites' frames; every response, JSON included, forbids content
// sniffing.
func TestHTTPSecurityHeaders(t *testing.T) {
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) {
		o.Static = fstest.MapFS{"index.html": {Data: []byte("<!doctype html><title>x</title>")}}
	})
	for _, tc := range []struct {
		path   string
		static bool
	}{{"/", true}, {"/index.html", true}, {"/healthz", false}, {"/api/user/online?userid=a", false}, {"/nothing", false}} {
		resp, err := http.Get("http://" + ts.Addr + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		if h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options %q", tc.path, h.Get("X-Content-Type-Options"))
		}
		csp := h.Get("Content-Security-Policy")
		if tc.static != (csp != "") || tc.static && (h.Get("X-Frame-Options") != "DENY" || h.Get("Referrer-Policy") != "no-referrer") {
			t.Errorf("%s (%d): CSP %q, X-Frame-Options %q, Referrer-Policy %q", tc.path, resp.StatusCode, csp, h.Get("X-Frame-Options"), h.Get("Referrer-Policy"))
		}
	}
}
