package codec

import "testing"

func TestSniff(t *testing.T) {
	cases := []struct {
		in   string
		want Proto
	}{
		{"\x01\x51\x05\x00\x00\x00\x32", ProtoTCP},
		{"\x16\x03\x01\x02\x00\x01", ProtoTLS},
		{"GET / HTTP/1.1\r\n", ProtoHTTP},
		{"POST /api/message/send HTTP/1.1\r\n", ProtoHTTP},
		{"PUT /x HTTP/1.1\r\n", ProtoHTTP},
		{"DELETE /x HTTP/1.1\r\n", ProtoHTTP},
		{"HEAD / HTTP/1.0\r\n", ProtoHTTP},
		{"OPTIONS * HTTP/1.1\r\n", ProtoHTTP},
		{"PATCH /x HTTP/1.1\r\n", ProtoHTTP},
	}
	for _, c := range cases {
		// Every prefix must either ask for more or give the final answer.
		for i := 0; i <= len(c.in); i++ {
			p, more := Sniff([]byte(c.in[:i]))
			switch {
			case more && p != ProtoUnknown:
				t.Fatalf("%q[:%d]: needMore with %v", c.in, i, p)
			case !more && p != c.want:
				t.Fatalf("%q[:%d] = %v, want %v", c.in, i, p, c.want)
			}
			if c.want == ProtoHTTP && i <= len(c.in) && i < indexSpace(c.in)+1 && !more {
				t.Fatalf("%q[:%d]: decided before the method was complete", c.in, i)
			}
		}
	}
	for _, bad := range []string{"X", "GETX", "GET/", "get / HTTP/1.1", "PUSH ", "\x00", "CONNECT host:443 HTTP/1.1", "\r\n"} {
		if p, more := Sniff([]byte(bad)); p != ProtoUnknown || more {
			t.Fatalf("%q = %v more=%v", bad, p, more)
		}
	}
	for _, partial := range []string{"", "P", "PO", "POST", "OPTION", "D", "H"} {
		if p, more := Sniff([]byte(partial)); p != ProtoUnknown || !more {
			t.Fatalf("%q = %v more=%v", partial, p, more)
		}
	}
}

func indexSpace(s string) int {
	for i := range s {
		if s[i] == ' ' {
			return i
		}
	}
	return len(s)
}

func TestProtoString(t *testing.T) {
	want := map[Proto]string{ProtoUnknown: "unknown", ProtoTCP: "tcp", ProtoHTTP: "http", ProtoWS: "ws", ProtoTLS: "tls", 99: "unknown"}
	for p, s := range want {
		if p.String() != s {
			t.Fatalf("%d: %q", p, p.String())
		}
	}
}
