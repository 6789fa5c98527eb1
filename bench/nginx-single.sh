#!/usr/bin/env bash
# nginx as one arm of bench/pairs.py: the harness's single mode (2 workers, keep-alive to the
# upstream, no access log) in front of URL, on a free loopback port it prints first. With a third
# argument `log`, nginx writes an access log line per request (request id, status, upstream
# time, bytes; buffered 64 KiB, flushed every second): the nearest nginx has to the gateway's
# prediction log, for comparing like with like.
#
#   python3 bench/pairs.py --backend target/release/mock-backend \
#     --arm "nginx=bash bench/nginx-single.sh URL DIR" --arm "sy=..."
set -euo pipefail
upstream="${1#http://}"
work="$2"
access_log="access_log off;"
if [ "${3:-}" = log ]; then
  access_log="log_format sy '\$request_id \$msec \$status \$upstream_response_time \$request_length \$bytes_sent';
  access_log $work/access.log sy buffer=64k flush=1s;"
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work"/tmp/{body,proxy,fastcgi,uwsgi,scgi}
cat >"$work/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $work/nginx.pid;
error_log $work/error.log crit;
events { worker_connections 4096; }
http {
  $access_log
  client_body_temp_path $work/tmp/body;
  proxy_temp_path $work/tmp/proxy;
  fastcgi_temp_path $work/tmp/fastcgi;
  uwsgi_temp_path $work/tmp/uwsgi;
  scgi_temp_path $work/tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
  upstream v1 { server $upstream; keepalive 128; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  server { listen 127.0.0.1:$port; location / { proxy_pass http://v1; } }
}
CONF
echo "http://127.0.0.1:$port"
exec "$(command -v nginx || echo /usr/sbin/nginx)" -p "$work" -c "$work/nginx.conf"
