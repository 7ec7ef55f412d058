package codec

// Proto is the protocol a connection speaks, decided from its first bytes.
type Proto uint8

// The protocols jim serves on one port.
const (
	ProtoUnknown Proto = iota
	ProtoTCP
	ProtoHTTP
	ProtoWS
	ProtoTLS
)

var protoNames = [...]string{"unknown", "tcp", "http", "ws", "tls"}

// String names the protocol for logs and metrics labels.
func (p Proto) String() string {
	if int(p) < len(protoNames) {
		return protoNames[p]
	}
	return "unknown"
}

// httpMethods are the request lines jim recognises; each ends with the space
// so that a match proves the whole method token has arrived.
var httpMethods = [...]string{"GET ", "POST ", "PUT ", "DELETE ", "HEAD ", "OPTIONS ", "PATCH "}

// tlsHandshake is the TLS record type of a ClientHello.
const tlsHandshake = 0x16

// Sniff classifies a connection by its first bytes: 0x01 is J-IM TCP, 0x16 a
// TLS ClientHello, and an HTTP method followed by a space is HTTP (whether it
// is a WebSocket upgrade is decided later, from the parsed request). While b
// is still a strict prefix of a method, or empty, needMore is true. Anything
// else is ProtoUnknown with needMore false, and the caller closes.
func Sniff(b []byte) (p Proto, needMore bool) {
	if len(b) == 0 {
		return ProtoUnknown, true
	}
	switch b[0] {
	case TCPVersion:
		return ProtoTCP, false
	case tlsHandshake:
		return ProtoTLS, false
	}
	more := false
	for _, m := range httpMethods {
		if len(b) >= len(m) {
			if string(b[:len(m)]) == m {
				return ProtoHTTP, false
			}
		} else if string(b) == m[:len(b)] {
			more = true
		}
	}
	return ProtoUnknown, more
}
