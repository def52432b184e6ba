// Security keys and passkeys: the browser's half of the WebAuthn ceremonies.
//
// A form marked `data-webauthn="create"` or `data-webauthn="get"` names, in `data-options`, the
// API endpoint that answers `{"publicKey": options}` (JSON, binary fields in base64url). On
// submit this script asks for the options, hands them to navigator.credentials, writes the
// result as JSON into the form's `data-webauthn-field` input and submits the form to the server,
// which verifies it. Nothing here is trusted: the server checks every byte.
(function () {
  "use strict";

  function fromB64url(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) base64 += "=";
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function toB64url(buffer) {
    if (!buffer) return null;
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (d) {
      return { type: d.type, id: fromB64url(d.id), transports: d.transports };
    });
  }

  function creationOptions(json) {
    var options = Object.assign({}, json);
    options.challenge = fromB64url(json.challenge);
    options.user = Object.assign({}, json.user, { id: fromB64url(json.user.id) });
    options.excludeCredentials = descriptors(json.excludeCredentials);
    return options;
  }

  function requestOptions(json) {
    var options = Object.assign({}, json);
    options.challenge = fromB64url(json.challenge);
    options.allowCredentials = descriptors(json.allowCredentials);
    return options;
  }

  function credentialJSON(credential) {
    var response = credential.response;
    var out = {
      id: credential.id,
      rawId: toB64url(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults
        ? credential.getClientExtensionResults()
        : {},
      response: { clientDataJSON: toB64url(response.clientDataJSON) },
    };
    if (response.attestationObject) {
      out.response.attestationObject = toB64url(response.attestationObject);
      out.response.transports = response.getTransports ? response.getTransports() : [];
    } else {
      out.response.authenticatorData = toB64url(response.authenticatorData);
      out.response.signature = toB64url(response.signature);
      out.response.userHandle = toB64url(response.userHandle);
    }
    return out;
  }

  function showError(form, message) {
    var box = form.querySelector("[data-webauthn-error]");
    if (box) {
      box.textContent = message;
      box.hidden = false;
    }
  }

  async function ceremony(form) {
    var kind = form.getAttribute("data-webauthn");
    var answer = await fetch(form.getAttribute("data-options"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: "{}",
    });
    var body = await answer.json().catch(function () {
      return {};
    });
    if (!answer.ok) throw new Error(body.detail || "The server did not answer; try again.");
    var credential =
      kind === "create"
        ? await navigator.credentials.create({ publicKey: creationOptions(body.publicKey) })
        : await navigator.credentials.get({ publicKey: requestOptions(body.publicKey) });
    if (!credential) throw new Error("No security key answered.");
    var field = form.querySelector("input[name='" + form.getAttribute("data-webauthn-field") + "']");
    field.value = JSON.stringify(credentialJSON(credential));
    form.submit();
  }

  function start(event) {
    var form = event.currentTarget;
    event.preventDefault();
    if (!window.PublicKeyCredential || !navigator.credentials) {
      showError(form, "This browser cannot use security keys or passkeys.");
      return;
    }
    var button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    ceremony(form).catch(function (error) {
      if (button) button.disabled = false;
      var cancelled = error && (error.name === "NotAllowedError" || error.name === "AbortError");
      showError(
        form,
        cancelled ? "The security key step was cancelled or timed out; try again." : error.message
      );
    });
  }

  document.querySelectorAll("form[data-webauthn]").forEach(function (form) {
    form.addEventListener("submit", start);
  });
})();
