package client

import (
	"log/slog"
	"time"
)

// Option configures Dial.
type Option func(*options)

type options struct {
	user, password, token string
	login                 bool

	heartbeat    time.Duration
	reconnect    bool
	backoffMin   time.Duration
	backoffMax   time.Duration
	handler      func(Message)
	buffer       int
	notices      bool
	logger       *slog.Logger
	dialTimeout  time.Duration
	resumeOnLost bool
}

func defaultOptions() options {
	return options{
		heartbeat:    30 * time.Second,
		reconnect:    true,
		backoffMin:   200 * time.Millisecond,
		backoffMax:   30 * time.Second,
		buffer:       256,
		dialTimeout:  10 * time.Second,
		resumeOnLost: true,
	}
}

// WithUser logs in as userID when the connection opens and again after
// every reconnect. The password and token are passed to the server's
// authenticator unchanged.
func WithUser(userID, password, token string) Option {
	return func(o *options) {
		o.user, o.password, o.token, o.login = userID, password, token, true
	}
}

// WithHeartbeat sets how often a heartbeat (cmd 13) is sent; the default is
// 30 s. It must be shorter than the server's idle timeout (120 s by
// default). A connection from which nothing has been read for three
// intervals is considered dead and is replaced. Zero or less disables both.
func WithHeartbeat(d time.Duration) Option {
	return func(o *options) { o.heartbeat = d }
}

// WithReconnect turns reconnecting on (the default) with an exponential
// backoff between min and max; each wait is picked at random from the upper
// half of the current step, so many clients dropped by one server restart do
// not come back in lockstep.
func WithReconnect(min, max time.Duration) Option {
	return func(o *options) {
		if min <= 0 {
			min = 200 * time.Millisecond
		}
		if max < min {
			max = min
		}
		o.reconnect, o.backoffMin, o.backoffMax = true, min, max
	}
}

// WithoutReconnect makes a lost connection final: requests then fail with
// ErrDisconnected and Messages is closed.
func WithoutReconnect() Option {
	return func(o *options) { o.reconnect = false }
}

// WithHandler delivers incoming messages to fn, called from a single
// goroutine in arrival order, instead of through Messages. While fn runs,
// further messages collect in the buffer (see WithBuffer); when it is full
// the connection reader waits for fn.
func WithHandler(fn func(Message)) Option {
	return func(o *options) { o.handler = fn }
}

// WithBuffer sets how many delivered messages may wait for the consumer
// before the connection reader blocks; the default is 256.
func WithBuffer(n int) Option {
	return func(o *options) {
		if n < 0 {
			n = 0
		}
		o.buffer = n
	}
}

// WithGroupNotices also delivers group join (cmd 9) and exit (cmd 10)
// notices as messages of kind KindJoin and KindLeave. They are not delivered
// by default, so that a consumer interested only in chats need not filter.
func WithGroupNotices() Option {
	return func(o *options) { o.notices = true }
}

// WithLogger sets the logger for connection events. The default discards.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithDialTimeout bounds each connection attempt, including the WebSocket
// upgrade; the default is 10 s.
func WithDialTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.dialTimeout = d
		}
	}
}

// WithoutResume keeps reconnecting but skips fetching missed messages
// afterwards; the offline queue is then left for Offline.
func WithoutResume() Option {
	return func(o *options) { o.resumeOnLost = false }
}
