package dispatch

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"jim/codec"
)

var secret = []byte("s3cret")

func token(t *testing.T, method jwt.SigningMethod, key any, claims jwt.RegisteredClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJWTAuth(t *testing.T) {
	a := NewJWTAuth(secret)
	future := jwt.NewNumericDate(time.Now().Add(time.Hour))
	good := token(t, jwt.SigningMethodHS256, secret, jwt.RegisteredClaims{Subject: "alice", ExpiresAt: future})
	u, err := a.Authenticate(t.Context(), codec.LoginReq{Token: good})
	if err != nil || u.UserID != "alice" {
		t.Fatalf("valid token: %v %v", u, err)
	}
	if _, err := a.Authenticate(t.Context(), codec.LoginReq{Token: good, UserID: "alice"}); err != nil {
		t.Fatalf("matching userId: %v", err)
	}
	none := token(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.RegisteredClaims{Subject: "alice"})
	for name, req := range map[string]codec.LoginReq{
		"empty":        {UserID: "alice"},
		"other user":   {Token: good, UserID: "bob"},
		"wrong secret": {Token: token(t, jwt.SigningMethodHS256, []byte("nope"), jwt.RegisteredClaims{Subject: "alice"})},
		"alg none":     {Token: none},
		"HS512":        {Token: token(t, jwt.SigningMethodHS512, secret, jwt.RegisteredClaims{Subject: "alice"})},
		"expired":      {Token: token(t, jwt.SigningMethodHS256, secret, jwt.RegisteredClaims{Subject: "alice", ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Minute))})},
		"no subject":   {Token: token(t, jwt.SigningMethodHS256, secret, jwt.RegisteredClaims{ExpiresAt: future})},
		"garbage":      {Token: "a.b.c"},
	} {
		if _, err := a.Authenticate(t.Context(), req); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestJWTLogin(t *testing.T) {
	d, _ := newDispatcher(t, Options{Auth: NewJWTAuth(secret)})
	c := newConn()
	good := token(t, jwt.SigningMethodHS256, secret, jwt.RegisteredClaims{Subject: "alice"})
	do(d, c, codec.CmdLoginReq, `{"token":"`+good+`"}`)
	if r := c.one(t); r.Code != 10007 || c.UserID() != "alice" {
		t.Fatalf("jwt login %s", r.o.JSON)
	}
	c = newConn()
	do(d, c, codec.CmdLoginReq, `{"userId":"alice","password":"123"}`)
	if r := c.one(t); r.Code != 10008 || !c.isClosed() || c.UserID() != "" {
		t.Fatalf("login without token %s", r.o.JSON)
	}
	// Query login goes through the same authenticator.
	c = newConn()
	d.LoginFromQuery(c, "mallory", "", strings.Replace(good, ".", ".x", 1))
	settle(d)
	if r := c.one(t); r.Code != 10008 {
		t.Fatalf("query login with bad token %s", r.o.JSON)
	}
}
