package main
import (
 _ "github.com/panjf2000/gnet/v2"
 _ "github.com/cloudwego/netpoll"
 _ "github.com/bytedance/sonic"
 _ "github.com/dgraph-io/badger/v4"
 _ "github.com/nats-io/nats.go"
 _ "github.com/gobwas/ws"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "github.com/golang-jwt/jwt/v5"
 _ "github.com/coder/websocket"
)
func main(){}
