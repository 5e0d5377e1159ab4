// The reader's time zone (issue 19): the browser's IANA name into each form field marked data-browser-zone.
// Without JavaScript, or in a browser that cannot tell, the field stays empty and the reader gets the
// newsletter's time until they choose one in their preferences.
(function () {
  "use strict";
  var zone = "";
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (error) {
    return;
  }
  var fields = document.querySelectorAll("input[data-browser-zone]");
  for (var i = 0; i < fields.length; i += 1) {
    fields[i].value = zone;
  }
})();
