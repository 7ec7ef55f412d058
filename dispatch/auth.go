package dispatch

import (
	"context"
	"errors"

	"github.com/golang-jwt/jwt/v5"

	"jim/codec"
)

// ErrLoginRefused is what authenticators return for bad credentials; the
// client only ever sees J-IM's 10008.
var ErrLoginRefused = errors.New("dispatch: login refused")

// Authenticator decides a login (cmd 5, or the WebSocket query login). It
// returns the user the connection is bound to: UserID is required, Nick and
// Avatar are optional and shown to other users. It runs on a worker, so it may
// block briefly (a database lookup), but a slow authenticator slows every
// connection sharing that worker.
type Authenticator interface {
	Authenticate(ctx context.Context, req codec.LoginReq) (*codec.User, error)
}

// AuthFunc adapts a function to Authenticator.
type AuthFunc func(ctx context.Context, req codec.LoginReq) (*codec.User, error)

// Authenticate calls f.
func (f AuthFunc) Authenticate(ctx context.Context, req codec.LoginReq) (*codec.User, error) {
	return f(ctx, req)
}

// AnyUser accepts every login that names a user id and trusts it, as J-IM
// does without a login processor. It is for development and trusted networks.
type AnyUser struct{}

// Authenticate accepts any non-empty user id (userId, or 2.x loginname).
func (AnyUser) Authenticate(_ context.Context, req codec.LoginReq) (*codec.User, error) {
	uid := req.User()
	if uid == "" {
		return nil, ErrLoginRefused
	}
	return &codec.User{UserID: uid}, nil
}

// JWTAuth accepts a login whose token is an HS256 JWT signed with its secret.
// The token's subject is the user id; exp and nbf are honoured when present.
type JWTAuth struct {
	secret []byte
	parser *jwt.Parser
}

// NewJWTAuth returns a JWTAuth for the shared HMAC secret.
func NewJWTAuth(secret []byte) *JWTAuth {
	return &JWTAuth{
		secret: append([]byte(nil), secret...),
		// Pinning the method refuses alg "none" and key-confusion tricks.
		parser: jwt.NewParser(jwt.WithValidMethods([]string{"HS256"})),
	}
}

// Authenticate validates req.Token. If the request also names a user id, it
// must equal the token's subject, so a valid token cannot log in as someone
// else.
func (a *JWTAuth) Authenticate(_ context.Context, req codec.LoginReq) (*codec.User, error) {
	if req.Token == "" {
		return nil, ErrLoginRefused
	}
	var claims jwt.RegisteredClaims
	_, err := a.parser.ParseWithClaims(req.Token, &claims, func(*jwt.Token) (any, error) { return a.secret, nil })
	if err != nil {
		return nil, errors.Join(ErrLoginRefused, err)
	}
	if claims.Subject == "" {
		return nil, ErrLoginRefused
	}
	if uid := req.User(); uid != "" && uid != claims.Subject {
		return nil, ErrLoginRefused
	}
	return &codec.User{UserID: claims.Subject}, nil
}
