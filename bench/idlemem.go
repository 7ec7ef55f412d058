package bench

import (
	"sync"

	"github.com/cloudwego/netpoll"
)

// idleBufferSize is the first buffer of each direction of a connection in
// the idle scenario. netpoll's defaults (an 8 KiB read buffer allocated at
// connect and a 4 KiB write node at the first write, both kept for the
// connection's life) made jimbench's memory per connection ten times the
// server's; idle connections carry a login and heartbeats of a few dozen
// bytes. A connection that does receive more grows its buffers as before.
const idleBufferSize = 256

// smallBuffers configures netpoll for idle connections, once, before the
// first connection is made.
var smallBuffers = sync.OnceValue(func() error {
	netpoll.LinkBufferCap = idleBufferSize
	return netpoll.Configure(netpoll.Config{BufferSize: idleBufferSize})
})
