set -euo pipefail
changed=0
[ -e /etc/apache2/mods-enabled/fcgid.load ] || { a2enmod -q fcgid; changed=1; }
[ -L /etc/apache2/conf-available/request-tracker5.conf ] || { ln -sfn /etc/request-tracker5/apache2-fcgid.conf /etc/apache2/conf-available/request-tracker5.conf; changed=1; }
[ -e /etc/apache2/conf-enabled/request-tracker5.conf ] || { a2enconf -q request-tracker5; changed=1; }
for m in socache_shmcb ssl rewrite headers; do [ -e /etc/apache2/mods-enabled/$m.load ] || { a2enmod -q $m; changed=1; }; done
[ -e /etc/apache2/sites-enabled/mailinfra.conf ] || { a2ensite -q mailinfra; changed=1; }
[ ! -e /etc/apache2/sites-enabled/000-default.conf ] || { a2dissite -q 000-default; changed=1; }
apache2ctl configtest
systemctl enable --quiet apache2
if [ "$changed" = 1 ] || ! systemctl is-active --quiet apache2; then systemctl restart apache2; fi

