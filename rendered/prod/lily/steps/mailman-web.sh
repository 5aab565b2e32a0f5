set -euo pipefail
rm -f /etc/nginx/sites-enabled/default
dj() { (cd /usr/share/mailman3-web && runuser -u www-data -- python3 /usr/bin/django-admin "$@" --pythonpath /usr/share/mailman3-web --settings settings --no-color); }
dj migrate --no-input --verbosity 0
dj collectstatic --no-input --verbosity 0
dj compress --verbosity 0 >/dev/null
dj shell --command 'from django.contrib.sites.models import Site; Site.objects.update_or_create(id=1, defaults={"domain": "lily.wikimedia.org", "name": "lily.wikimedia.org"})'

