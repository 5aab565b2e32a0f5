# Mailman 3 web UI (Postorius + HyperKitty) on lily.wikimedia.org, rendered by mailinfra from stack config. Do not edit
# on the host. Debian's settings_local (mailman3-web 0+20200530): /usr/share/mailman3-web/settings.py imports
# it last. The three keys are derived from the stack secret mailinfra:mailmanWebSecret.

SECRET_KEY = '(derived from secret mailinfra:mailmanWebSecret)'

ADMINS = (
     ('Mailman Suite Admin', 'noc@wikimedia.org'),
)

# Requests by any other Host: header get 400
ALLOWED_HOSTS = ['lily.wikimedia.org', 'lists.wikimedia.org', 'localhost']

# Mailman core's REST API on this host (bound to loopback, see mailman.cfg [webservice])
MAILMAN_REST_API_URL = 'http://127.0.0.1:8001'
MAILMAN_REST_API_USER = 'restadmin'
MAILMAN_REST_API_PASS = '(derived from secret mailinfra:mailmanWebSecret)'
# Mailman core hands each post to HyperKitty over http://localhost/ (nginx's loopback server)
MAILMAN_ARCHIVER_KEY = '(derived from secret mailinfra:mailmanWebSecret)'
MAILMAN_ARCHIVER_FROM = ('127.0.0.1', '::1')

INSTALLED_APPS = (
    'hyperkitty',
    'postorius',
    'django_mailman3',
    'django.contrib.admin',
    'django.contrib.auth',
    'django.contrib.contenttypes',
    'django.contrib.sessions',
    'django.contrib.sites',
    'django.contrib.messages',
    'django.contrib.staticfiles',
    'rest_framework',
    'django_gravatar',
    'compressor',
    'haystack',
    'django_extensions',
    'django_q',
    'allauth',
    'allauth.account',
    'allauth.socialaccount',
)

# dbconfig-common's SQLite database (debconf: mailman3-web/database-type sqlite3)
DATABASES = {
    'default': {
        'ENGINE': 'django.db.backends.sqlite3',
        'NAME': '/var/lib/mailman3/web/mailman3web.db',
        'USER': '',
        'PASSWORD': '',
        'HOST': '',
        'PORT': '',
        'OPTIONS': {
        },
    }
}

# nginx terminates TLS and passes HTTPS=on over uwsgi
USE_X_FORWARDED_HOST = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True

LANGUAGE_CODE = 'en-us'
TIME_ZONE = 'UTC'
USE_I18N = True
USE_L10N = True
USE_TZ = True

# Sign-up and notification mail goes out through the local Exim
EMAILNAME = 'lists.wikimedia.org'
DEFAULT_FROM_EMAIL = 'postorius@{}'.format(EMAILNAME)
SERVER_EMAIL = 'root@lily.wikimedia.org'
EMAIL_HOST = 'localhost'
EMAIL_PORT = 25

ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https"
SOCIALACCOUNT_PROVIDERS = {
}

COMPRESS_OFFLINE = True

# Quiet management commands: without these, every manage.py run (HyperKitty's cron jobs, each minute) prints
# Django's W042 for every model and django-q's retry/timeout warning, and cron mails that output to www-data.
# AutoField is what the apps' migrations already use; django-q's retry must exceed Debian's timeout of 300 s.
DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'
Q_CLUSTER = {
    'timeout': 300,
    'retry': 360,
    'save_limit': 100,
    'orm': 'default',
    'poll': 5,
}

# Mailman core fetches list templates from Postorius over the loopback server
POSTORIUS_TEMPLATE_BASE_URL = 'http://localhost/mailman3/'
