package gateway

import "github.com/prometheus/client_golang/prometheus"

// metrics are the gateway's own series; dispatch registers the chat ones on
// the same registry.
type metrics struct {
	connections   *prometheus.GaugeVec
	accepted      prometheus.Counter
	disconnects   *prometheus.CounterVec
	decodeErrors  *prometheus.CounterVec
	slowConsumers prometheus.Counter
	bytesIn       prometheus.Counter
	bytesOut      prometheus.Counter
	httpRequests  *prometheus.CounterVec
	rateLimited   *prometheus.CounterVec
	tlsHandshakes *prometheus.CounterVec
	tlsReloads    *prometheus.CounterVec
	// inboundRefused counts frames refused by MaxInboundPending.
	inboundRefused prometheus.Counter
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "jim_connections", Help: "Open connections by protocol (unknown until the first bytes are classified).",
		}, []string{"proto"}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jim_connections_accepted_total", Help: "Connections accepted.",
		}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jim_disconnects_total", Help: "Closed connections by reason.",
		}, []string{"reason"}),
		decodeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jim_decode_errors_total", Help: "Inbound bytes that failed to decode, by protocol.",
		}, []string{"proto"}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jim_slow_consumer_disconnects_total", Help: "Connections closed because their outbound queue passed the cap.",
		}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jim_bytes_in_total", Help: "Bytes read from clients.",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jim_bytes_out_total", Help: "Bytes handed to the kernel for clients.",
		}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jim_http_requests_total", Help: "HTTP requests by route class and status.",
		}, []string{"route", "code"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jim_rate_limited_total", Help: "Inbound messages refused, or connections dropped, for exceeding a rate (kind msg or bytes).",
		}, []string{"kind"}),
		tlsHandshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jim_tls_handshakes_total", Help: "Server TLS handshakes by result (ok or error).",
		}, []string{"result"}),
		tlsReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jim_tls_cert_reloads_total", Help: "TLS certificate reloads by result (ok or error).",
		}, []string{"result"}),
		inboundRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jim_inbound_refused_total", Help: "Connections refused a frame still arriving because all connections together held the inbound budget (-max-inbound-pending).",
		}),
	}
	r.MustRegister(m.connections, m.accepted, m.disconnects, m.decodeErrors,
		m.slowConsumers, m.bytesIn, m.bytesOut, m.httpRequests, m.rateLimited,
		m.tlsHandshakes, m.tlsReloads, m.inboundRefused)
	return m
}
