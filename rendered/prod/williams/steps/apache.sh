set -euo pipefail
changed=0

for m in socache_shmcb ssl rewrite headers; do [ -e /etc/apache2/mods-enabled/$m.load ] || { a2enmod -q $m; changed=1; }; done
[ -e /etc/apache2/sites-enabled/mailinfra.conf ] || { a2ensite -q mailinfra; changed=1; }
[ ! -e /etc/apache2/sites-enabled/000-default.conf ] || { a2dissite -q 000-default; changed=1; }
apache2ctl configtest
systemctl enable --quiet apache2
if [ "$changed" = 1 ] || ! systemctl is-active --quiet apache2; then systemctl restart apache2; fi

