/*
 * async-engine CMS presence: who else has this record open, and a notice
 * when someone else saves it. Finds the .async-presence elements the CMS
 * edit form carries (also after the CMS swaps forms in place), subscribes to
 * the record's topic and its presence events on the live-events hub with the
 * token the CMS issued, and closes the connection when the form goes away.
 * No dependencies.
 */
(function () {
  if (window.asyncEnginePresence) {
    return;
  }
  window.asyncEnginePresence = true;

  function start(el) {
    el.setAttribute('data-started', '1');
    var d = el.dataset;
    var others = {};
    var othersLine = el.querySelector('.async-presence__others');
    var savedLine = el.querySelector('.async-presence__saved');

    function render() {
      var names = [];
      Object.keys(others).forEach(function (k) {
        if (names.indexOf(others[k]) < 0) {
          names.push(others[k]);
        }
      });
      names.sort();
      othersLine.textContent = names.length ? 'Also editing: ' + names.join(', ') : '';
      el.hidden = !names.length && !savedLine.textContent;
    }

    function seen(subscription) {
      var p = subscription.payload || {};
      if (p.tab === d.tab) {
        return;
      }
      if (subscription.active) {
        others[subscription.subscriber] = p.name || 'someone';
      } else {
        delete others[subscription.subscriber];
      }
      render();
    }

    var url = new URL(d.hub);
    url.searchParams.append('topic', d.topic);
    url.searchParams.append('topic', d.presence + '/{subscriber}');
    url.searchParams.append('authorization', d.token);
    var source = new EventSource(url.toString());
    source.onopen = function () {
      fetch(d.hub + '/subscriptions/' + encodeURIComponent(d.topic), {
        headers: { Authorization: 'Bearer ' + d.token }
      }).then(function (r) {
        return r.ok ? r.json() : { subscriptions: [] };
      }).then(function (list) {
        list.subscriptions.forEach(seen);
      }).catch(function () {});
    };
    source.onmessage = function (e) {
      var data = JSON.parse(e.data);
      if (data.type === 'Subscription') {
        seen(data);
      }
    };
    ['write', 'publish', 'unpublish', 'delete'].forEach(function (type) {
      source.addEventListener(type, function (e) {
        var data = JSON.parse(e.data);
        if (!data.by || String(data.by.id) === d.me) {
          return;
        }
        var verb = type === 'write' ? 'saved' : type === 'delete' ? 'deleted' : type + 'ed';
        savedLine.textContent = verb.charAt(0).toUpperCase() + verb.slice(1) + ' by ' + data.by.name + ' \u2014 ';
        var reload = document.createElement('a');
        reload.href = '#';
        reload.textContent = 'reload';
        reload.onclick = function (ev) {
          ev.preventDefault();
          window.location.reload();
        };
        savedLine.appendChild(reload);
        render();
      });
    });
    var watch = setInterval(function () {
      if (!document.body.contains(el)) {
        source.close();
        clearInterval(watch);
      }
    }, 1000);
  }

  function scan() {
    document.querySelectorAll('.async-presence:not([data-started])').forEach(start);
  }
  scan();
  setInterval(scan, 500);
})();
