set -euo pipefail
/usr/local/sbin/mailinfra-rt-queues general

